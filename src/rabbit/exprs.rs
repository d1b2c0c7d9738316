//! Every Erlang expression the tool evaluates on the node, by name. Each
//! returns JSON (`rabbit_json:encode`), so both transports read the same
//! answer: Erlang distribution gets the binary itself, `rabbitmqctl eval`
//! prints it hex-encoded (see [`super::control`]). Inputs are variables
//! bound by the caller (listed in `inputs`), never text spliced in.
//!
//! Checked on RabbitMQ 3.8.9 (OTP 23), 3.10.8 (25), 4.0.5 (27), 4.3.6 (29).

/// A named expression (without the final `.`).
#[derive(Debug, Clone, Copy)]
pub struct Expr {
    /// For messages and logs.
    pub name: &'static str,
    /// Variables the caller binds.
    pub inputs: &'static [&'static str],
    /// Erlang expressions, comma-separated.
    pub text: &'static str,
}

/// Defines `Settle()`: waits until no start or stop of the broker is under
/// way, then returns the boot state (`ready`, `stopped`), or `timeout`
/// once `Patience` ms have passed. A start holds the `rabbit_boot`
/// marker from before the boot state says `booting` until after it says
/// `ready` (it polls every 200 ms): `rabbit:start()` called meanwhile
/// returns `ok` at once without starting anything, and `rabbit:stop()`
/// races the start's own end. Defines `Left()`: the ms left.
/// (`rabbit:await_startup/1` does not do: it ignores the marker, and on
/// 3.8 waits its whole timeout for a start that is past `booting`.)
macro_rules! settle {
    () => {
        "SettleBy = erlang:monotonic_time(millisecond) + Patience, \
        Left = fun() -> max(0, SettleBy - erlang:monotonic_time(millisecond)) end, \
        Settle = fun Wait() -> \
            State = rabbit_boot_state:get(), \
            case is_pid(whereis(rabbit_boot)) orelse \
                lists:member(State, [booting, core_started, stopping]) of \
            false -> State; \
            true -> case Left() of 0 -> timeout; _ -> timer:sleep(20), Wait() end end end, "
    };
}

/// `{"node", "rabbitmq", "erlang", "running", "data_dir", "watchdog"}`:
/// works while the broker is stopped (the VM answers). `watchdog` says
/// whether a backup's pause watchdog waits on the node. A start or stop
/// under way (a broker still booting is not stopped, only not ready) is
/// waited for, up to `Patience` ms.
pub const PROBE: Expr = Expr {
    name: "probe",
    inputs: &["Patience"],
    text: concat!(
        settle!(),
        "_ = Settle(), \
        rabbit_json:encode(#{\
        node => atom_to_binary(node(), utf8), \
        rabbitmq => case application:get_key(rabbit, vsn) of \
            {ok, V} -> unicode:characters_to_binary(V); _ -> <<\"unknown\">> end, \
        erlang => unicode:characters_to_binary(erlang:system_info(otp_release)), \
        running => rabbit:is_running(), \
        data_dir => unicode:characters_to_binary(\
            try rabbit:data_dir() catch error:undef -> rabbit_mnesia:dir() end), \
        watchdog => is_pid(whereis(rabbitmq_backup_watchdog))})"
    ),
};

/// The data directory: `rabbit:data_dir()` (3.12+; it outlives Mnesia),
/// else `rabbit_mnesia:dir()` as in the procedure (3.8-4.3).
pub const DATA_DIR: Expr = Expr {
    name: "data directory",
    inputs: &[],
    text: "rabbit_json:encode(unicode:characters_to_binary(\
        try rabbit:data_dir() catch error:undef -> rabbit_mnesia:dir() end))",
};

/// Whether the RabbitMQ application runs.
pub const APP_RUNNING: Expr = Expr {
    name: "app running",
    inputs: &[],
    text: "rabbit_json:encode(rabbit:is_running())",
};

/// `{"members": [node…], "running": [node…], "name": "…" | null}`: the
/// cluster as the node sees it (`rabbit_nodes` from 3.11, `rabbit_mnesia`
/// before); `running` are the members whose broker runs; `name` is the one
/// set with `set_cluster_name` (shared by every member; without one each
/// member reports a default name of its own, so none is given).
pub const CLUSTER: Expr = Expr {
    name: "cluster",
    inputs: &[],
    text: "B = fun(Ns) -> [atom_to_binary(M, utf8) || M <- Ns] end, \
        rabbit_json:encode(#{\
        members => B(try rabbit_nodes:all() catch error:undef -> rabbit_mnesia:cluster_nodes(all) end), \
        running => B(try rabbit_nodes:list_running() catch error:undef -> \
            try rabbit_nodes:all_running() catch error:undef -> \
            rabbit_mnesia:cluster_nodes(running) end end), \
        name => case catch rabbit_runtime_parameters:value_global(cluster_name) of \
            C when is_binary(C), C =/= <<>> -> C; _ -> null end})",
};

/// `[{"protocol": "amqp" | "amqp/ssl", "ip", "port"}]`: this node's AMQP
/// listeners.
pub const AMQP_LISTENERS: Expr = Expr {
    name: "AMQP listeners",
    inputs: &[],
    text: "rabbit_json:encode([#{protocol => atom_to_binary(P, utf8), \
            ip => unicode:characters_to_binary(inet:ntoa(IP)), port => Port} || \
        {listener, N, P, _H, IP, Port, _O} <- rabbit_networking:active_listeners(), \
        N =:= node(), P =:= amqp orelse P =:= 'amqp/ssl'])",
};

/// Every queue of the vhosts in `Vhosts` (binaries) with exact counts:
/// classic queues are asked themselves (`info_all`, as `list_queues`);
/// quorum queues through `rabbit_amqqueue:stat/1`, because their
/// `messages` info lags by seconds; a stream from its writer's counters
/// on its leader's node (committed minus first offset; `counters/2`, or
/// `overview/1` before osiris had it), because both its `stat` and its
/// `messages` come from metrics that lag by seconds (on 3.10 a stream
/// holding messages reads 0 for several seconds); through `stat` when the
/// leader cannot be asked. `[{vhost, name, type, durable,
/// messages, messages_persistent, consumers, policy, message_ttl, home}]`;
/// a count the queue does not give is null; `home` is the node holding the
/// messages (classic: the queue's process; quorum and stream: the leader),
/// null for a queue that is down; `message_ttl`: the queue's own
/// arguments set `x-message-ttl`.
pub const QUEUES: Expr = Expr {
    name: "queues",
    inputs: &["Vhosts"],
    text: "N = fun(X) when is_integer(X) -> X; (_) -> null end, \
        T = fun(rabbit_classic_queue) -> <<\"classic\">>; (rabbit_quorum_queue) -> <<\"quorum\">>; \
            (rabbit_stream_queue) -> <<\"stream\">>; (A) when is_atom(A) -> atom_to_binary(A, utf8); \
            (_) -> <<\"classic\">> end, \
        Qs = lists:append([rabbit_amqqueue:list(V) || V <- Vhosts]), \
        Home = fun(Q) -> case amqqueue:get_pid(Q) of \
            {_, Nd} when is_atom(Nd) -> atom_to_binary(Nd, utf8); \
            P when is_pid(P) -> atom_to_binary(node(P), utf8); _ -> null end end, \
        Homes = maps:from_list([{amqqueue:get_name(Q), Home(Q)} || Q <- Qs]), \
        Stat = fun(Q) -> case catch rabbit_amqqueue:stat(Q) of {ok, M, _} -> M; _ -> none end end, \
        Count = fun(Q) -> case amqqueue:get_type(Q) of \
            rabbit_stream_queue -> \
                W = {osiris_writer, amqqueue:get_name(Q)}, \
                Wn = case amqqueue:get_pid(Q) of P2 when is_pid(P2) -> node(P2); _ -> node() end, \
                Ctrs = case catch rpc:call(Wn, osiris_counters, counters, \
                        [W, [committed_offset, first_offset]], 5000) of \
                    #{} = C2 -> C2; \
                    _ -> catch rpc:call(Wn, osiris_counters, overview, [W], 5000) end, \
                case Ctrs of \
                    #{committed_offset := C, first_offset := F} \
                        when is_integer(C), is_integer(F), C >= F -> C - F + 1; \
                    #{committed_offset := C} when is_integer(C), C < 0 -> 0; \
                    _ -> Stat(Q) end; \
            _ -> Stat(Q) end end, \
        Exact = maps:from_list([{amqqueue:get_name(Q), M} || Q <- Qs, \
            not lists:member(amqqueue:get_type(Q), [classic, rabbit_classic_queue]), \
            M <- [Count(Q)], is_integer(M)]), \
        rabbit_json:encode(lists:append([[begin \
            {resource, QV, queue, QN} = Name = proplists:get_value(name, I), \
            Args = proplists:get_value(arguments, I), \
            #{vhost => QV, name => QN, type => T(proplists:get_value(type, I)), \
              durable => proplists:get_value(durable, I) =:= true, \
              messages => maps:get(Name, Exact, N(proplists:get_value(messages, I))), \
              messages_persistent => N(proplists:get_value(messages_persistent, I)), \
              consumers => N(proplists:get_value(consumers, I)), \
              policy => case proplists:get_value(policy, I) of \
                  <<_, _/binary>> = Pol -> Pol; _ -> null end, \
              message_ttl => is_list(Args) andalso lists:keymember(<<\"x-message-ttl\">>, 1, Args), \
              home => maps:get(Name, Homes, null)} end \
            || I <- rabbit_amqqueue:info_all(V, [name, type, durable, messages, \
                messages_persistent, consumers, policy, arguments])] \
            || V <- Vhosts]))",
};

/// `[{"vhost", "name", "leader": node | null}]` for each `[Vhost, Name]`
/// of `Queues`: where the queue is led, asked of its Raft cluster (a
/// quorum queue) as well as read from the queue's record, which follows an
/// election with a delay; null while the two disagree, no leader is known
/// or the queue is gone.
pub const LIVE_LEADERS: Expr = Expr {
    name: "queue leaders",
    inputs: &["Queues"],
    text: "L = fun(Q) -> case amqqueue:get_pid(Q) of \
            {RaName, Nd} -> case catch ra:members({RaName, node()}, 5000) of \
                {ok, _, {_, Nd}} -> atom_to_binary(Nd, utf8); _ -> null end; \
            P when is_pid(P) -> atom_to_binary(node(P), utf8); _ -> null end end, \
        rabbit_json:encode([#{vhost => V, name => N, \
            leader => case rabbit_amqqueue:lookup(rabbit_misc:r(V, queue, N)) of \
                {ok, Q} -> L(Q); _ -> null end} || [V, N] <- Queues])",
};

/// Asks each quorum queue (and, from RabbitMQ 4.0, each stream) of
/// `Queues` (`[Vhost, Name, ToNode]`) to hand its leadership to that node.
/// Returns at once `[[vhost, name]]`: the queues that cannot be moved
/// (streams before 4.0); [`LIVE_LEADERS`] tells when the others have.
pub const TRANSFER_LEADERSHIP: Expr = Expr {
    name: "leadership transfer",
    inputs: &["Queues"],
    text: "T = fun(Q, To) -> case amqqueue:get_pid(Q) of \
            {_, Nd} when Nd =:= To -> ok; \
            {RaName, _} = Pid -> ra:transfer_leadership(Pid, {RaName, To}); \
            P when is_pid(P), node(P) =/= To -> \
                code:ensure_loaded(rabbit_stream_queue), \
                case erlang:function_exported(rabbit_stream_queue, transfer_leadership, 2) of \
                    true -> rabbit_stream_queue:transfer_leadership(Q, To); false -> unsupported end; \
            _ -> ok end end, \
        rabbit_json:encode([[V, N] || [V, N, To] <- Queues, \
            case rabbit_amqqueue:lookup(rabbit_misc:r(V, queue, N)) of \
                {ok, Q} -> (catch T(Q, binary_to_atom(To, utf8))) =:= unsupported; \
                _ -> false end])",
};

/// The capture server (`capture/server.erl`): `{"port", "token"}` of the
/// listener it leaves on the node for the tool.
pub const CAPTURE_SERVER: Expr = Expr {
    name: "capture server",
    inputs: &[],
    text: include_str!("../capture/server.erl"),
};

/// The name the pause watchdog registers on the node.
pub const WATCHDOG: &str = "rabbitmq_backup_watchdog";

/// Stops the RabbitMQ application (the VM keeps running), as `rabbitmqctl
/// stop_app` does (`rabbit:stop()`), after standing down any earlier
/// watchdog.
///
/// The management agent's event handler is removed first: removed during
/// the stop instead, its cleanup waits on processes that are themselves
/// stopping and stalls the stop for 5 s (RabbitMQ 3.10). The agent adds it
/// back when the application starts; where there is none this is a no-op.
/// If the stop fails and the broker still runs, the handler is put back at
/// once (removing it also turned statistics off): the broker is left as
/// found, and the answer is `{"stop_failed": "<reason>"}`. `Fail` true
/// makes the stop fail on the node (the `ctl:stop-app` failpoint).
///
/// With `Watchdog` > 0 (ms), a process is left on the node that starts the
/// application again if the tool goes quiet that long (`pet` messages
/// keep it waiting) or, with `Tool` (the tool's node name over Erlang
/// distribution; `undefined` over rabbitmqctl), at once when that
/// connection closes: a backup killed during its pause never leaves the
/// broker stopped. It answers `{done, From}` with whether it fired.
/// Restores pass 0: their state machine decides when the broker starts.
///
/// A start or stop under way (the node's own boot until it has seen
/// itself ready, a fired watchdog's start) is waited for first, up to
/// `Patience` ms (then `{"stop_failed": …}`, nothing done): stopping in
/// the middle of a start leaves that start to end in a stopped broker
/// while still holding the boot marker.
pub const STOP_APP: Expr = Expr {
    name: "stop_app",
    inputs: &["Watchdog", "Tool", "Fail", "Patience"],
    text: concat!(
        settle!(),
        "case whereis(rabbitmq_backup_watchdog) of undefined -> ok; \
            Old -> OldRef = monitor(process, Old), exit(Old, kill), \
            receive {'DOWN', OldRef, _, _, _} -> ok end end, \
        case Settle() of timeout -> \
            rabbit_json:encode(#{stop_failed => unicode:characters_to_binary(io_lib:format(\
                \"a start or stop of the broker already under way did not end within ~b s (boot state ~p)\", \
                [Patience div 1000, rabbit_boot_state:get()]))}); \
        _ -> \
        HadHandler = (catch lists:member(rabbit_mgmt_db_handler, \
            gen_event:which_handlers(rabbit_event))) =:= true, \
        _ = (catch gen_event:delete_handler(rabbit_event, rabbit_mgmt_db_handler, [])), \
        case (catch case Fail of true -> erlang:error(rabbitmq_backup_failpoint); \
                _ -> ok = rabbit:stop(), stopped = rabbit_boot_state:get(), ok end) of \
        ok -> \
            case Watchdog of 0 -> ok; _ -> \
                W = spawn(fun() -> \
                    case Tool of undefined -> ok; _ -> erlang:monitor_node(Tool, true) end, \
                    Fire = fun(Why) -> \
                        logger:warning(\"rabbitmq-backup: ~ts during a backup pause; starting the broker again\", [Why]), \
                        _ = (catch rabbit:start()), \
                        receive {done, From} -> From ! {rabbitmq_backup_watchdog, self(), fired} \
                        after 3600000 -> ok end end, \
                    Loop = fun(Again) -> receive \
                        pet -> Again(Again); \
                        {done, From} -> From ! {rabbitmq_backup_watchdog, self(), stood_down}; \
                        {nodedown, _} -> Fire(\"the tool's connection closed\") \
                        after Watchdog -> Fire(io_lib:format(\"no word from the tool for ~b ms\", [Watchdog])) \
                        end end, \
                    Loop(Loop) end), \
                register(rabbitmq_backup_watchdog, W) end, \
            rabbit_json:encode(#{stopped => true}); \
        StopFailed -> \
            _ = case HadHandler andalso rabbit:is_running() of \
                true -> (catch rabbit_mgmt_db_handler:add_handler()); false -> ok end, \
            rabbit_json:encode(#{stop_failed => \
                unicode:characters_to_binary(io_lib:format(\"~tp\", [StopFailed]))}) \
        end end"
    ),
};

/// Stands the pause watchdog down (if any), then starts the application
/// and returns once it runs: `{"watchdog": "none" | "stood_down" |
/// "fired"}`. "fired" means the broker ran again before this call, during
/// the pause: what was copied meanwhile may be inconsistent.
///
/// `rabbit:start()` (what `rabbitmqctl start_app` calls) returns `ok` at
/// once, starting nothing, while another start holds the boot marker, even
/// one about to end in a stopped broker (the node's own boot stopped under
/// it, see [`STOP_APP`]). So a start under way is waited for, the state
/// looked at, and the broker started (again) until it runs. Bounded by
/// `Patience` ms: then the answer also has `"timeout": "<boot state>"`;
/// a start that fails has `"start_failed": "<reason>"`.
pub const START_APP: Expr = Expr {
    name: "start_app",
    inputs: &["Patience"],
    text: concat!(
        settle!(),
        "Watchdog = case whereis(rabbitmq_backup_watchdog) of \
            undefined -> <<\"none\">>; \
            W -> Ref = monitor(process, W), W ! {done, self()}, \
                receive {rabbitmq_backup_watchdog, W, Outcome} -> \
                    demonitor(Ref, [flush]), atom_to_binary(Outcome, utf8); \
                {'DOWN', Ref, _, _, _} -> <<\"none\">> \
                after Left() -> demonitor(Ref, [flush]), <<\"fired\">> end end, \
        Start = fun Go() -> case Settle() of \
            ready -> ok; \
            timeout -> {timeout, rabbit_boot_state:get()}; \
            _ -> Self = self(), Tag = make_ref(), \
                {Starter, Mon} = spawn_monitor(fun() -> Self ! {Tag, catch rabbit:start()} end), \
                receive {Tag, ok} -> demonitor(Mon, [flush]), Go(); \
                    {Tag, Failed} -> demonitor(Mon, [flush]), {failed, Failed}; \
                    {'DOWN', Mon, process, Starter, Died} -> {failed, Died} \
                after Left() -> demonitor(Mon, [flush]), {timeout, rabbit_boot_state:get()} end \
            end end, \
        Text = fun(T) -> unicode:characters_to_binary(io_lib:format(\"~tp\", [T])) end, \
        rabbit_json:encode(case Start() of \
            ok -> #{watchdog => Watchdog}; \
            {timeout, Still} -> #{watchdog => Watchdog, timeout => Text(Still)}; \
            {failed, Why} -> #{watchdog => Watchdog, start_failed => Text(Why)} end)"
    ),
};

/// Tells the pause watchdog the tool is alive (over rabbitmqctl; over
/// distribution a message is sent instead).
pub const PET: Expr = Expr {
    name: "pet the watchdog",
    inputs: &[],
    text: "_ = (catch (rabbitmq_backup_watchdog ! pet)), rabbit_json:encode(true)",
};

/// Every expression, for tests that check them all on each version.
pub const ALL: [Expr; 12] = [
    PROBE,
    DATA_DIR,
    CLUSTER,
    AMQP_LISTENERS,
    APP_RUNNING,
    QUEUES,
    LIVE_LEADERS,
    TRANSFER_LEADERSHIP,
    CAPTURE_SERVER,
    STOP_APP,
    START_APP,
    PET,
];
