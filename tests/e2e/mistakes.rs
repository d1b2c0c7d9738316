//! What a new operator trips over: mistyped or missing repositories, where
//! a snapshot went, ids announced too early, a wrong Erlang cookie or
//! password, the version. Each mistake is refused with what was meant.

use std::path::Path;

use crate::backup::loaded_node;
use crate::harness::amqp::hold_consumer;
use crate::harness::garage::garage;
use crate::harness::tool::Tool;

/// Whether `text` holds something shaped like a snapshot id
/// (`YYYYMMDDTHHMMSSZ-<8 hex>`).
fn holds_snapshot_id(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(24)).any(|i| {
        let w = &b[i..i + 25];
        w[..8].iter().all(u8::is_ascii_digit)
            && w[8] == b'T'
            && w[9..15].iter().all(u8::is_ascii_digit)
            && &w[15..17] == b"Z-"
            && w[17..].iter().all(|c| c.is_ascii_hexdigit())
    })
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn mistyped_and_missing_repositories_are_refused_naming_them() {
    let cwd = tempfile::tempdir().unwrap();
    // No node: every refusal must come before the tool asks one anything.
    let tool = Tool::new()
        .var("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:1")
        .var("RABBITMQCTL", "/nonexistent/rabbitmqctl");

    // A mistyped S3 URL is not a relative directory: refused, nothing written.
    for (typo, meant) in [
        ("s3:/bucket/prod", "s3://bucket/prod"),
        ("s3:bucket", "s3://bucket"),
        ("s3//bucket", "s3://bucket"),
    ] {
        for args in [vec!["backup", "--repo", typo], vec!["list", "--repo", typo]] {
            let run = tool.run_in(cwd.path(), &args);
            run.expect_code(2);
            assert!(
                run.stderr.contains(&format!("did you mean {meant}?")),
                "{args:?}: {}",
                run.stderr
            );
        }
        let run = tool
            .clone()
            .var("RABBITMQ_BACKUP_REPO", typo)
            .run_in(cwd.path(), &["backup"]);
        run.expect_code(2);
        assert!(run.stderr.contains(meant), "{}", run.stderr);
    }
    assert!(entries(cwd.path()).is_empty(), "nothing was written");

    // Reading commands refuse a repository that does not exist (exit 2,
    // naming it), where they used to say "no snapshots" and exit 0.
    let missing = cwd.path().join("unmounted/backups");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["list", "--repo", m],
        vec!["verify", "--all", "--repo", m],
        vec!["show", "latest", "--from-node", "rabbit@a", "--repo", m],
        vec!["prune", "--keep-last", "1", "--repo", m],
        vec!["pin", "2026", "--from-node", "rabbit@a", "--repo", m],
        vec!["check-repo", "--repo", m],
        vec!["restore", "latest", "--from-node", "rabbit@a", "--repo", m],
    ] {
        let run = tool.run_in(cwd.path(), &args);
        run.expect_code(2);
        assert!(
            run.stderr.contains(&format!("{m} does not exist")),
            "{args:?}: {}",
            run.stderr
        );
    }
    // ... and so does `list` for a relative one, named absolute.
    let run = tool.run_in(cwd.path(), &["list", "--repo", "typo-backups"]);
    run.expect_code(2);
    let absolute = cwd.path().join("typo-backups");
    assert!(
        run.stderr.contains(absolute.to_str().unwrap()),
        "{}",
        run.stderr
    );

    // backup creates a missing directory only when its parent exists: here
    // the parent is missing too, and the refusal comes before the node is
    // asked anything (it is unreachable).
    let run = tool.run_in(cwd.path(), &["backup", "--repo", m]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("neither the repository directory") && run.stderr.contains(m),
        "{}",
        run.stderr
    );
    assert!(!cwd.path().join("unmounted").exists());
    assert!(!holds_snapshot_id(&run.stderr), "{}", run.stderr);
}

#[test]
fn a_backup_says_where_its_snapshot_went_and_names_it_only_when_writing() {
    let node = loaded_node();
    let cwd = tempfile::tempdir().unwrap();
    let tool = Tool::new().with(node.env());

    // Refused (a consumer is connected): no snapshot id is ever mentioned,
    // and the repository directory is not created.
    {
        let _consumer = hold_consumer(&node, "/", "classic");
        let run = tool.run_in(cwd.path(), &["backup", "--repo", "backups"]);
        run.expect_code(4);
        assert!(
            run.stderr.contains("consumers are connected"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("1 consumer)"), "plural: {}", run.stderr);
        assert!(!holds_snapshot_id(&run.stderr), "{}", run.stderr);
        assert!(!run.stderr.contains("writing snapshot"), "{}", run.stderr);
        assert!(!cwd.path().join("backups").exists());
    }

    // A relative repository: created (its parent exists), said so, and the
    // snapshot's absolute directory is stated in the log and the report.
    let run = tool.run_in(cwd.path(), &["backup", "--repo", "backups", "--json"]);
    run.ok();
    let report = run.json();
    let id = report["id"].as_str().unwrap();
    let repo = cwd.path().join("backups");
    let expected = repo.join("snapshots").join(&node.name).join(id);
    assert!(expected.join("manifest.json").is_file());
    assert_eq!(report["location"], expected.to_str().unwrap());
    let log = &run.stderr;
    assert!(
        log.contains(&format!(
            "created the repository directory {}",
            repo.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("snapshot {id} is in {}", expected.display())),
        "{log}"
    );
    // The id appears first when writing begins, after the checks.
    let first = log.find(id).unwrap();
    assert_eq!(
        first,
        log.find(&format!("writing snapshot {id}")).unwrap() + "writing snapshot ".len(),
        "{log}"
    );
    assert!(
        !log.contains("1 chunks") && !log.contains("1 files"),
        "{log}"
    );

    // An S3 repository: bucket, key prefix and endpoint.
    let g = garage();
    let bucket = g.new_bucket();
    let report = tool
        .clone()
        .with(g.env())
        .run(&[
            "backup",
            "--repo",
            &format!("s3://{}/prod/rmq", bucket.name),
            "--json",
        ])
        .ok()
        .json();
    let id = report["id"].as_str().unwrap();
    assert_eq!(
        report["location"],
        format!(
            "bucket {} at endpoint {}, key prefix prod/rmq/snapshots/{}/{id}/",
            bucket.name,
            g.endpoint(),
            node.name
        )
        .as_str()
    );

    // `latest` with nothing for the node: the repository, the node looked
    // for, and the nodes that do have snapshots are named.
    for args in [
        vec!["show", "latest", "--from-node", "rabbit@elsewhere"],
        vec![
            "restore",
            "latest",
            "--from-node",
            "rabbit@elsewhere",
            "--dry-run",
        ],
    ] {
        let mut args = args;
        args.extend(["--repo", "backups"]);
        let run = tool.run_in(cwd.path(), &args);
        assert_ne!(run.code, 0);
        for part in [
            "rabbit@elsewhere",
            repo.to_str().unwrap(),
            node.name.as_str(),
        ] {
            assert!(
                run.stderr.contains(part),
                "{args:?} names {part}: {}",
                run.stderr
            );
        }
    }
    // Without --from-node, `latest` is this node's: named too.
    let empty = cwd.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = tool.run(&["show", "latest", "--repo", empty.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(&node.name) && run.stderr.contains(empty.to_str().unwrap()),
        "{}",
        run.stderr
    );
}

#[test]
fn credential_failures_say_which_credentials_and_where_they_are_read() {
    let node = loaded_node();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let r = repo.to_str().unwrap();

    // A wrong Erlang cookie in the tool's HOME: named as such, with where it
    // is read, and never taken for a missing data directory.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let cookie = home.join(".erlang.cookie");
    std::fs::write(&cookie, "NOT-THE-NODES-COOKIE").unwrap();
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let wrong_cookie = Tool::new()
        .with(node.env())
        .var("HOME", home.to_str().unwrap());
    // With the management API (the node named by it), and without (the
    // node reached by rabbitmqctl only).
    for extra in [vec![], vec!["--management-url", "http://127.0.0.1:1"]] {
        let mut args = vec!["backup", "--repo", r];
        args.extend(extra);
        let run = wrong_cookie.run(&args);
        run.expect_code(1);
        assert!(
            run.stderr.contains("could not authenticate")
                && run.stderr.contains(&format!("{}", cookie.display()))
                && run.stderr.contains("RABBITMQ_ERLANG_COOKIE"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("data directory") && !run.stderr.contains("--data-dir"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(entries(&repo).is_empty());

    // A wrong password: one message and exit code, for the management API
    // (backup) and for AMQP (exclude) alike.
    let wrong_password = Tool::new()
        .with(node.env())
        .var("RABBITMQ_PASSWORD", "not-the-password");
    let advice = |stderr: &str| -> String {
        let at = stderr
            .find("rejected the credentials of user \"guest\"")
            .unwrap_or_else(|| panic!("{stderr}"));
        stderr[at..].lines().next().unwrap().to_string()
    };
    let backup = wrong_password.run(&["backup", "--repo", r]);
    backup.expect_code(1);
    let exclude = wrong_password.run(&[
        "exclude",
        "--vhost",
        "oro",
        "--queue",
        "oro.default",
        "--routing-key",
        "oro.email.*",
    ]);
    exclude.expect_code(1);
    assert_eq!(advice(&backup.stderr), advice(&exclude.stderr));
    assert!(
        advice(&exclude.stderr).contains("RABBITMQ_PASSWORD"),
        "{}",
        exclude.stderr
    );
    assert!(
        !exclude.stderr.contains("ACCESS_REFUSED"),
        "{}",
        exclude.stderr
    );
    assert!(!exclude.stderr.contains("not-the-password"));
    assert_eq!(node.counts("oro")["oro.default"], 40, "nothing moved");
}

#[test]
fn the_version_names_the_commit_and_the_build_date() {
    let run = Tool::new().run(&["--version"]);
    let line = run.ok().stdout.trim().to_string();
    assert!(
        line.starts_with(&format!("rabbitmq-backup {} (", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains(", built 20"), "{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    match git::commit(dir) {
        Some(commit) => assert!(
            line.contains(&format!("commit {} of {}", commit.short, commit.date)),
            "{line} for {commit:?}"
        ),
        None => assert!(line.contains("without git metadata"), "{line}"),
    }
}

#[path = "../../build/git.rs"]
mod git;

#[test]
fn the_version_falls_back_without_git_and_reads_a_checkout() {
    // A source tree without .git (a tarball): the fallback.
    let tarball = tempfile::tempdir().unwrap();
    assert_eq!(git::commit(tarball.path()), None);
    assert_eq!(
        git::version("1.2.3", None, "2026-05-09"),
        "1.2.3 (built 2026-05-09 from a source tree without git metadata)"
    );
    // A tree nested in someone else's checkout is not taken for one.
    let outer = tempfile::tempdir().unwrap();
    let sh = |dir: &Path, script: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_DATE", "2026-05-01T12:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-05-01T12:00:00Z")
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    };
    sh(
        outer.path(),
        "git init -q && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m one",
    );
    let inner = outer.path().join("vendored");
    std::fs::create_dir(&inner).unwrap();
    assert_eq!(git::commit(&inner), None);
    let commit = git::commit(outer.path()).unwrap();
    assert_eq!(commit.short.len(), 12);
    assert_eq!(commit.date, "2026-05-01");
    assert!(commit.watch.iter().all(|p| p.exists()), "{commit:?}");
    assert_eq!(
        git::version("1.2.3", Some(&commit), "2026-05-09"),
        format!(
            "1.2.3 (commit {} of 2026-05-01, built 2026-05-09)",
            commit.short
        )
    );
    assert_eq!(git::date_of(0), "1970-01-01");
    assert_eq!(git::date_of(1_778_284_800), "2026-05-09");
}
