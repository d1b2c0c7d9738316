%% rabbitmq-backup: the capture server (DESIGN §12). Erlang expressions, not
%% a module: evaluated on the node (rabbitmqctl eval, or over Erlang
%% distribution), they start one process that listens on 127.0.0.1, answers
%% {"port", "token"} as JSON and returns at once. The tool connects, sends the
%% token, then asks for queues one at a time; for each, the server streams
%% the queue's messages in queue order and ends with a summary. Every read is
%% read-only: nothing is consumed, settled, returned or requeued.
%%
%% Frames ({packet, 4}), tool -> node: Token; then <<Kind, VhostLen:16,
%% Vhost, Name>> with Kind $q (quorum queue) or $s (stream); <<"x">> to end.
%% Node -> tool: <<"M", Flags, MsgTerm/binary>> per message (term_to_binary
%% of the #basic_message{} or #mc{} the queue holds; Flags bit 0: converted
%% to AMQP 0-9-1 here), then <<"S", Json/binary>> (summary) or <<"F",
%% Text/binary>> (that queue failed; the server goes on).
%%
%% Quorum queues: one local query copies the leader's machine state; the
%% queue order is recovered with the structures' own `out` functions
%% (returns first, then the ready messages by priority; checked-out messages
%% before them), which is what a consumer would be given. The bodies are
%% read from the Raft log by index, in batches: ra_server_proc:read_entries/4
%% (ra 3.x: RabbitMQ 4.3), else an external log reader (ra 1.x, 2.x: 3.8 to
%% 4.0; sparse_read where it exists). 3.8 and 3.9 keep bodies in the state,
%% which are used as they are. Cost: linear in the number of messages.
%%
%% Streams: an osiris reader from the first offset to the end of the last
%% chunk committed when the capture starts; each entry is turned into what an AMQP
%% 0-9-1 consumer receives (without the x-stream-offset header a delivery
%% adds), with the broker's own functions.
Token = crypto:strong_rand_bytes(24),
{ok, Listener} = gen_tcp:listen(0, [binary, {ip, {127,0,0,1}}, {packet, 4}, {active, false},
                                    {nodelay, true}, {send_timeout, 1800000}, {backlog, 4}]),
{ok, Port} = inet:port(Listener),
Lookup = fun(Vhost, Name) ->
    case rabbit_amqqueue:lookup(rabbit_misc:r(Vhost, queue, Name)) of
        {ok, Q} -> Q;
        _ -> throw(not_found)
    end end,
Quorum = fun(Sock, Vhost, Name) ->
    Q = Lookup(Vhost, Name),
    {RaName, _} = amqqueue:get_pid(Q),
    Me = {RaName, node()},
    %% Right after a start_app the member may still be electing a leader:
    %% it is asked again for up to 30 s while no leader is known.
    Query = fun Query(Tries) ->
        case catch ra:local_query(Me, fun(St) -> St end, 60000) of
            {ok, {_, State}, Me} -> State;
            {ok, _, {_, LeaderNode}} when LeaderNode =/= node() -> throw({not_leader, LeaderNode});
            _ when Tries > 0 -> timer:sleep(200), Query(Tries - 1);
            {ok, _, _} -> throw({not_leader, undefined});
            Other -> throw({local_query, Other})
        end end,
    S = Query(150),
    %% {RaftIndex, Header, Body | none | empty} of every message shape since 3.8.
    Norm = fun Norm(I) when is_integer(I), I >= 0 -> {I band 16#FFFFFFFFFFF, (I bsr 44) band 16#7FFF, none};
               Norm([Idx | H]) when is_integer(Idx) -> {Idx, H, none};
               Norm({_, {RIdx, {H, Raw}}}) when is_integer(RIdx) -> {RIdx, H, Raw};
               Norm({RIdx, {H, Raw}}) when is_integer(RIdx) -> {RIdx, H, Raw};
               Norm({_Lock, M}) when is_integer(M); is_list(M) -> Norm(M);
               Norm(Other) when is_tuple(Other) -> throw({unknown_message_shape, element(1, Other)});
               Norm(_) -> throw(unknown_message_shape) end,
    Drain = fun Drain(lqueue, Qu, Acc) ->
                    case lqueue:out(Qu) of
                        {{value, X}, Q2} -> Drain(lqueue, Q2, [X | Acc]);
                        {empty, _} -> lists:reverse(Acc)
                    end;
                Drain(Mod, Qu, Acc) ->
                    case Mod:out(Qu) of
                        {X, Q2} -> Drain(Mod, Q2, [X | Acc]);
                        empty -> lists:reverse(Acc)
                    end end,
    QMod = fun(Qu) when is_tuple(Qu), element(1, Qu) =:= rabbit_fifo_q -> rabbit_fifo_q;
              (Qu) when is_tuple(Qu), element(1, Qu) =:= pq -> rabbit_fifo_pq;
              (_) -> lqueue end,
    case element(1, S) of rabbit_fifo -> ok; Other -> throw({unknown_state, Other}) end,
    Msgs0 = element(3, S),
    {Checked, Returns, Ready} = case is_map(Msgs0) of
        true -> %% machine version 0 (3.8): messages by number, bodies in memory
            {[M || C <- maps:values(element(11, S)), M <- maps:values(element(3, C))],
             Drain(lqueue, element(6, S), []),
             [maps:get(K, Msgs0) || K <- lists:sort(maps:keys(Msgs0))]};
        false ->
            {[M || C <- maps:values(element(10, S)),
                   M <- maps:values(case is_map(element(2, C)) of
                                        true -> element(3, C);
                                        false -> element(5, C) end)],
             Drain(lqueue, element(5, S), []),
             Drain(QMod(Msgs0), Msgs0, [])}
        end,
    %% 4.3: messages returned with a delay wait in a tree until they are due.
    Delayed = case tuple_size(S) >= 18 andalso is_tuple(element(18, S))
                  andalso element(1, element(18, S)) =:= delayed of
        true -> gb_trees:values(element(2, element(18, S)));
        false -> []
    end,
    Items = lists:keysort(1, [Norm(M) || M <- Checked])
        ++ [Norm(M) || M <- Returns ++ Ready ++ Delayed],
    GetMsg = case {erlang:function_exported(rabbit_fifo, get_msg_from_cmd, 1),
                   erlang:function_exported(rabbit_fifo, get_msg, 1)} of
        {true, _} -> fun rabbit_fifo:get_msg_from_cmd/1;
        {_, true} -> fun rabbit_fifo:get_msg/1;
        _ -> fun({enqueue, _, _, M}) -> M end
    end,
    Body = fun({'$usr', _, C, _}) -> GetMsg(C); ({'$usr', _, C}) -> GetMsg(C) end,
    Method = case erlang:function_exported(ra_server_proc, read_entries, 4) of
        true -> read_entries;
        false -> case erlang:function_exported(ra_log_reader, sparse_read, 3) of
                     true -> sparse_read;
                     false -> range_read
                 end
    end,
    %% An external reader must apply the server's segment updates (and
    %% acknowledge them) before it reads: they arrive as ra events.
    FindUpdate = fun FindUpdate({ra_log_update, _, _, _} = U, _) -> U;
                     FindUpdate(T, D) when is_tuple(T), D < 6 ->
                         lists:foldl(fun(E, false) -> FindUpdate(E, D + 1); (_, A) -> A end,
                                     false, tuple_to_list(T));
                     FindUpdate(_, _) -> false end,
    Updated = fun Updated(R) ->
        receive X -> case FindUpdate(X, 0) of
                         false -> Updated(R);
                         U -> Updated(ra_log_reader:handle_log_update(U, R))
                     end
        after 0 -> R
        end end,
    Fetch = fun(Idxs, R) ->
        case Method of
            read_entries ->
                {ok, {Map, F}} = ra_server_proc:read_entries(Me, Idxs, R, 120000),
                {maps:map(fun(_, {_, _, E}) -> E end, Map), F};
            sparse_read ->
                {Es, R2} = ra_log_reader:sparse_read(Updated(R), lists:reverse(lists:usort(Idxs)), []),
                {maps:from_list([{I, E} || {I, _, E} <- Es]), R2};
            range_read ->
                lists:foldl(fun(I, {Mp, Ri}) ->
                                    {Es, _, Rj} = ra_log_reader:read(I, I, Ri),
                                    {maps:merge(Mp, maps:from_list([{Ix, E} || {Ix, _, E} <- Es])), Rj}
                            end, {#{}, Updated(R)}, Idxs)
        end end,
    Reader0 = case Method of
        read_entries -> undefined;
        _ -> case lists:any(fun({_, _, Raw}) -> Raw =:= none orelse Raw =:= empty end, Items) of
                 true -> ra:register_external_log_reader(Me);
                 false -> none
             end
    end,
    %% AMQP 1.0 (or MQTT, STOMP) messages: as an AMQP 0-9-1 consumer gets them.
    Convert = fun(M) when is_tuple(M), element(1, M) =:= mc, element(2, M) =/= mc_amqpl ->
                      {1, mc:convert(mc_amqpl, M)};
                 (M) -> {0, M} end,
    Send = fun(M0) ->
        {F, M} = Convert(M0),
        ok = gen_tcp:send(Sock, [<<"M", F:8>>, term_to_binary(M)]),
        F end,
    %% The next batch without measuring the rest (length/1 per batch would
    %% make the capture quadratic).
    Take = fun Take(0, L, Acc) -> {lists:reverse(Acc), L};
               Take(_, [], Acc) -> {lists:reverse(Acc), []};
               Take(N, [H | T], Acc) -> Take(N - 1, T, [H | Acc]) end,
    Batches = fun Batches([], Acc) -> Acc;
                  Batches(Rest, {Sent, Missing, Conv, R}) ->
                      {B, Rest2} = Take(512, Rest, []),
                      Need = [I || {I, _, Raw} <- B, Raw =:= none orelse Raw =:= empty],
                      {Map, R2} = case Need of [] -> {#{}, R}; _ -> Fetch(Need, R) end,
                      {S3, M3, C3} = lists:foldl(
                          fun({I, _, Raw}, {S2, M2, C2}) ->
                                  Found = case Raw =:= none orelse Raw =:= empty of
                                      true -> case maps:find(I, Map) of
                                                  {ok, E} -> {ok, Body(E)};
                                                  error -> error
                                              end;
                                      false -> {ok, Raw}
                                  end,
                                  case Found of
                                      {ok, Msg} -> {S2 + 1, M2, C2 + Send(Msg)};
                                      %% gone since the state was copied (consumed, expired)
                                      error -> {S2, M2 + 1, C2}
                                  end
                          end, {Sent, Missing, Conv}, B),
                      Batches(Rest2, {S3, M3, C3, R2})
              end,
    {Sent, Missing, Converted, ReaderN} = Batches(Items, {0, 0, 0, Reader0}),
    case {Method, ReaderN} of
        {_, undefined} -> ok;
        {_, none} -> ok;
        {read_entries, Flru} -> _ = ra_flru:evict_all(Flru), ok;
        _ -> ra_log_reader:close(ReaderN)
    end,
    #{listed => length(Items), sent => Sent, missing => Missing, converted => Converted,
      method => case Reader0 of none -> <<"state">>; _ -> atom_to_binary(Method, utf8) end}
end,
Stream = fun(Sock, Vhost, Name) ->
    Q = Lookup(Vhost, Name),
    P = amqqueue:get_pid(Q),
    case is_pid(P) andalso node(P) =:= node() of
        true -> ok;
        false when is_pid(P) -> throw({not_leader, node(P)});
        false -> throw({not_leader, undefined})
    end,
    %% The reader's counter goes with it (osiris 1.3 does not delete it on close).
    Counter = {rabbitmq_backup, amqqueue:get_name(Q), self()},
    {ok, S0} = osiris:init_reader(P, first, {Counter, []}),
    End = osiris_log:committed_offset(S0),
    ToMsg = case erlang:function_exported(rabbit_msg_record, init, 1) of
        true -> fun(Bin) -> %% 3.9 to 3.13
            R0 = rabbit_msg_record:init(Bin),
            {utf8, X} = rabbit_msg_record:message_annotation(<<"x-exchange">>, R0, {utf8, <<>>}),
            {utf8, RK} = rabbit_msg_record:message_annotation(<<"x-routing-key">>, R0, {utf8, Name}),
            {Props, Payload} = rabbit_msg_record:to_amqp091(R0),
            {ok, M} = rabbit_basic:message(rabbit_misc:r(Vhost, exchange, X), RK,
                                           {content, 60, Props, none, none, [Payload]}),
            M end;
        false -> fun(Bin) -> %% 4.x: message containers
            Mc = case erlang:function_exported(mc_amqp, init_from_stream, 2) of
                true -> mc_amqp:init_from_stream(Bin, #{x => <<>>, rk => [Name]});
                false ->
                    M0 = mc:init(mc_amqp, Bin, #{}),
                    M1 = case mc:exchange(M0) of undefined -> mc:set_annotation(x, <<>>, M0); _ -> M0 end,
                    case mc:routing_keys(M1) of [] -> mc:set_annotation(rk, [Name], M1); _ -> M1 end
            end,
            mc:convert(mc_amqpl, Mc) end
    end,
    %% The committed offset is the id (first offset) of the last committed
    %% chunk: every record of that chunk is committed too.
    Loop = fun Loop(S, Acc) ->
        case osiris_log:read_chunk_parsed(S) of
            {end_of_stream, S2} -> {Acc, S2};
            {error, E} -> throw({stream_read, E});
            {[], S2} -> Loop(S2, Acc);
            {[{ChId, _} | _], S2} when ChId > End -> {Acc, S2};
            {[{ChId, _} | _] = Recs, S2} ->
                Acc2 = lists:foldl(
                    fun({_, B}, {N, Skipped}) when is_binary(B) ->
                            ok = gen_tcp:send(Sock, [<<"M", 1:8>>, term_to_binary(ToMsg(B))]),
                            {N + 1, Skipped};
                       %% compressed sub-batches: only stream-protocol clients read them
                       (_, {N, Skipped}) -> {N, Skipped + 1}
                    end, Acc, Recs),
                case ChId >= End of
                    true -> {Acc2, S2};
                    false -> Loop(S2, Acc2)
                end
        end end,
    {{Sent, Skipped}, SN} = try case End < 0 of
            true -> {{0, 0}, S0};
            false -> Loop(S0, {0, 0})
        end
    catch Class:Reason:Stack ->
        _ = (catch osiris_counters:delete(Counter)),
        erlang:raise(Class, Reason, Stack)
    end,
    _ = osiris_log:close(SN),
    _ = (catch osiris_counters:delete(Counter)),
    #{listed => Sent + Skipped, sent => Sent, missing => 0, skipped => Skipped,
      converted => Sent, method => <<"osiris">>}
end,
Json = fun(M) -> rabbit_json:encode(M) end,
Serve = fun Serve(Sock) ->
    case gen_tcp:recv(Sock, 0, 1800000) of
        {ok, <<Kind, VLen:16, Vhost:VLen/binary, Name/binary>>} when Kind =:= $q; Kind =:= $s ->
            Parent = self(),
            %% One process per queue: an external log reader is unregistered
            %% when its process ends.
            {Pid, Ref} = spawn_monitor(fun() ->
                Answer = try
                    Summary = case Kind of
                        $q -> Quorum(Sock, Vhost, Name);
                        $s -> Stream(Sock, Vhost, Name)
                    end,
                    [<<"S">>, Json(Summary)]
                catch
                    throw:not_found -> [<<"S">>, Json(#{not_found => true})];
                    throw:{not_leader, LN} -> [<<"S">>, Json(#{not_leader => LN})];
                    Class:Reason:Stack ->
                        [<<"F">>, iolist_to_binary(io_lib:format("~p:~P ~P", [Class, Reason, 20, Stack, 12]))]
                end,
                Parent ! {self(), Answer} end),
            receive
                {Pid, Answer} ->
                    erlang:demonitor(Ref, [flush]),
                    ok = gen_tcp:send(Sock, Answer),
                    Serve(Sock);
                {'DOWN', Ref, _, _, Why} ->
                    ok = gen_tcp:send(Sock, [<<"F">>, iolist_to_binary(io_lib:format("~P", [Why, 20]))]),
                    Serve(Sock)
            end;
        _ -> gen_tcp:close(Sock)
    end end,
Server = spawn(fun() ->
    case gen_tcp:accept(Listener, 60000) of
        {ok, Sock} ->
            gen_tcp:close(Listener),
            case gen_tcp:recv(Sock, 0, 60000) of
                {ok, Token} -> Serve(Sock);
                _ -> gen_tcp:close(Sock)
            end;
        _ -> gen_tcp:close(Listener)
    end end),
ok = gen_tcp:controlling_process(Listener, Server),
rabbit_json:encode(#{port => Port, token => base64:encode(Token)})
