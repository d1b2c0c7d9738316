//! The Terraform modules' lifecycle rules must match what the tool writes
//! (DESIGN.md §4 and §7): keys under `<prefix>snapshots/`, and the object tag
//! `tier=<daily|weekly|monthly>` on every object of a snapshot, `tier=keep`
//! once pinned. A rule that drifts from the tool's constants would expire
//! snapshots the retention policy keeps, or keep everything forever.
//!
//! The `.tf` files are parsed by python-hcl2 through `scripts/tf-to-json`, run
//! with the virtualenv that `scripts/check-terraform` creates. Without that
//! venv the test fails (it does not skip): run `scripts/check-terraform` first.

use std::path::{Path, PathBuf};
use std::process::Command;

use rabbitmq_backup::repo::SNAPSHOTS_DIR;
use rabbitmq_backup::retention::{TIER_TAG, Tier};
use serde_json::Value;

/// The tiers that lifecycle rules expire; `Tier::Keep` is never one of them.
const EXPIRING_TIERS: [Tier; 3] = [Tier::Daily, Tier::Weekly, Tier::Monthly];

/// The prefix every rule must filter on, as written in the HCL: the module's
/// repository prefix followed by the tool's snapshots directory.
fn snapshots_prefix() -> String {
    format!("${{var.prefix}}{}/", SNAPSHOTS_DIR)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/rabbitmq-backup/tf-venv/bin/python`, as
/// in `scripts/check-terraform`.
fn venv_python() -> PathBuf {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache"),
    };
    cache.join("rabbitmq-backup/tf-venv/bin/python")
}

/// One `.tf` file as JSON (python-hcl2's form: blocks are lists of objects).
fn parse_tf(path: &Path) -> Value {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} does not exist: run scripts/check-terraform first (it creates the python-hcl2 virtualenv this test uses)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(repo_root().join("scripts/tf-to-json"))
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "scripts/tf-to-json {} failed (run scripts/check-terraform to rebuild the venv):\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "tf-to-json printed invalid JSON for {}: {e}",
            path.display()
        )
    })
}

/// Every `.tf` file of `terraform/modules/<name>`, parsed.
fn module(name: &str) -> Vec<Value> {
    let dir = repo_root().join("terraform/modules").join(name);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .tf file in {}", dir.display());
    paths.iter().map(|path| parse_tf(path)).collect()
}

/// The bodies of the top-level blocks `kind` ("resource", "data") of type
/// `block_type`, by name, across all files.
fn blocks<'a>(files: &'a [Value], kind: &str, block_type: &str) -> Vec<(&'a str, &'a Value)> {
    files
        .iter()
        .filter_map(|file| file.get(kind)?.as_array())
        .flatten()
        .filter_map(|by_type| by_type.get(block_type)?.as_object())
        .flatten()
        .map(|(name, body)| (unquote(name), body))
        .collect()
}

/// python-hcl2 < 7 and `strip_string_quotes` give `abc`, newer defaults `"abc"`.
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn string(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).map(unquote)
}

/// The first (only) instance of a nested block: `block { ... }` parses as a
/// one-element list.
fn first<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name)?.as_array()?.first()
}

/// Tags from an HCL map, as (key, value) pairs.
fn tags_of(map: Option<&Value>) -> Vec<(String, String)> {
    map.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                unquote(k).to_string(),
                string(Some(v)).unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A rule's filter: key prefix (as written in the HCL) and tags.
type Filter = (Option<String>, Vec<(String, String)>);

/// A lifecycle rule, reduced to what the layout depends on.
#[derive(Debug)]
struct Rule<'a> {
    id: String,
    /// The key prefix filter, as written in the HCL.
    prefix: Option<String>,
    tags: Vec<(String, String)>,
    /// Inside a `dynamic "rule"` block (a rule that a variable can switch off).
    optional: bool,
    body: &'a Value,
}

/// The `rule` blocks of a lifecycle resource, static and dynamic, with
/// `read_filter` extracting (prefix, tags) from a rule body.
fn rules<'a>(resource: &'a Value, read_filter: fn(&Value) -> Filter) -> Vec<Rule<'a>> {
    let fixed = resource
        .get("rule")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|body| (body, false));
    let dynamic = resource
        .get("dynamic")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|block| first(block.get("rule")?, "content"))
        .map(|body| (body, true));
    fixed
        .chain(dynamic)
        .map(|(body, optional)| {
            let (prefix, tags) = read_filter(body);
            Rule {
                id: string(body.get("id")).unwrap_or("<no id>").to_string(),
                prefix,
                tags,
                optional,
                body,
            }
        })
        .collect()
}

/// aws_s3_bucket_lifecycle_configuration: `filter { prefix }`, or
/// `filter { and { prefix, tags = {...} } }`, or `filter { tag { key, value } }`.
fn aws_filter(rule: &Value) -> Filter {
    let Some(filter) = first(rule, "filter") else {
        return (None, Vec::new());
    };
    let scope = first(filter, "and").unwrap_or(filter);
    let prefix = string(scope.get("prefix")).map(str::to_string);
    let mut tags = tags_of(scope.get("tags"));
    if let Some(tag) = first(filter, "tag") {
        tags.push((
            string(tag.get("key")).unwrap_or_default().to_string(),
            string(tag.get("value")).unwrap_or_default().to_string(),
        ));
    }
    (prefix, tags)
}

/// minio_ilm_policy: `filter = "<prefix>"` and `tags = {...}`.
fn minio_filter(rule: &Value) -> Filter {
    (
        string(rule.get("filter")).map(str::to_string),
        tags_of(rule.get("tags")),
    )
}

/// The one lifecycle resource of `resource_type` in a module, as rules.
fn lifecycle_rules<'a>(
    files: &'a [Value],
    resource_type: &str,
    read_filter: fn(&Value) -> Filter,
) -> Vec<Rule<'a>> {
    let resources = blocks(files, "resource", resource_type);
    assert_eq!(
        resources.len(),
        1,
        "expected exactly one {resource_type}, found {}",
        resources.len()
    );
    let rules = rules(resources[0].1, read_filter);
    assert!(!rules.is_empty(), "{resource_type} has no rule");
    rules
}

/// The checks shared by both modules: one rule per expiring tier, tagged as
/// the tool tags; no rule expiring pinned snapshots by tag; every rule under
/// `<prefix>snapshots/`; one max-age rule, prefix-only and optional.
fn check_layout(module_name: &str, rules: &[Rule], expires: fn(&Value) -> bool) {
    let expected_prefix = snapshots_prefix();
    for rule in rules {
        let prefix = rule.prefix.as_deref().unwrap_or_else(|| {
            panic!(
                "{module_name}: rule {:?} has no prefix filter, so it applies to the whole bucket",
                rule.id
            )
        });
        assert!(
            prefix.ends_with(&format!("{SNAPSHOTS_DIR}/")) && prefix == expected_prefix,
            "{module_name}: rule {:?} filters on prefix {prefix:?}; snapshots are written under {expected_prefix:?}",
            rule.id
        );
        for (key, value) in &rule.tags {
            assert_eq!(
                key, TIER_TAG,
                "{module_name}: rule {:?} filters on tag {key:?}, the tool writes {TIER_TAG:?}",
                rule.id
            );
            assert_ne!(
                value,
                Tier::Keep.as_str(),
                "{module_name}: rule {:?} expires pinned snapshots ({TIER_TAG}={})",
                rule.id,
                Tier::Keep.as_str()
            );
            assert!(
                EXPIRING_TIERS.iter().any(|tier| tier.as_str() == value),
                "{module_name}: rule {:?} filters on {TIER_TAG}={value:?}, a tier the tool never writes",
                rule.id
            );
        }
    }

    for tier in EXPIRING_TIERS {
        let expected = vec![(TIER_TAG.to_string(), tier.as_str().to_string())];
        let matching: Vec<&Rule> = rules.iter().filter(|rule| rule.tags == expected).collect();
        assert_eq!(
            matching.len(),
            1,
            "{module_name}: expected exactly one rule filtering on {TIER_TAG}={}, found {:?}",
            tier.as_str(),
            matching.iter().map(|rule| &rule.id).collect::<Vec<_>>()
        );
        let rule = matching[0];
        assert!(
            expires(rule.body),
            "{module_name}: tier rule {:?} sets no expiration",
            rule.id
        );
        assert!(
            !rule.optional,
            "{module_name}: tier rule {:?} must not depend on a variable",
            rule.id
        );
    }

    // The max-age safety net expires current objects whatever their tag, so
    // it also expires pinned snapshots: exactly one such rule, and a variable
    // (max_age_days = null) must be able to remove it.
    let untagged_expiring: Vec<&Rule> = rules
        .iter()
        .filter(|rule| rule.tags.is_empty() && expires(rule.body))
        .collect();
    assert_eq!(
        untagged_expiring.len(),
        1,
        "{module_name}: expected one prefix-only expiring rule (max-age), found {:?}",
        untagged_expiring
            .iter()
            .map(|rule| &rule.id)
            .collect::<Vec<_>>()
    );
    assert!(
        untagged_expiring[0].optional,
        "{module_name}: rule {:?} expires every snapshot, pinned ones included, and cannot be switched off",
        untagged_expiring[0].id
    );
}

#[test]
fn aws_lifecycle_rules_match_the_repository_layout() {
    let files = module("aws-s3");
    let rules = lifecycle_rules(&files, "aws_s3_bucket_lifecycle_configuration", aws_filter);
    // Current objects expire after N days (not just expired delete markers).
    let expires = |rule: &Value| first(rule, "expiration").is_some_and(|e| e.get("days").is_some());
    check_layout("aws-s3", &rules, expires);

    let abort = rules
        .iter()
        .find(|rule| {
            first(rule.body, "abort_incomplete_multipart_upload")
                .is_some_and(|a| a.get("days_after_initiation").is_some())
        })
        .expect("aws-s3: no rule aborts incomplete multipart uploads");
    assert!(
        abort.tags.is_empty(),
        "aws-s3: S3 refuses abort_incomplete_multipart_upload in a rule with tags"
    );

    let noncurrent = rules
        .iter()
        .find(|rule| first(rule.body, "noncurrent_version_expiration").is_some_and(|n| n.get("noncurrent_days").is_some()))
        .expect("aws-s3: no rule expires noncurrent versions (the bucket is versioned: expired data would stay forever)");
    assert!(
        noncurrent.tags.is_empty(),
        "aws-s3: the noncurrent-version rule must not depend on tags"
    );
}

#[test]
fn minio_ilm_rules_match_the_repository_layout() {
    let files = module("minio");
    let rules = lifecycle_rules(&files, "minio_ilm_policy", minio_filter);
    // `expiration = "<N>d"`; "DeleteMarker" only removes orphaned markers.
    let expires = |rule: &Value| {
        string(rule.get("expiration")).is_some_and(|e| e.ends_with('d') && e != "DeleteMarker")
    };
    check_layout("minio", &rules, expires);

    let noncurrent = rules
        .iter()
        .find(|rule| first(rule.body, "noncurrent_expiration").is_some_and(|n| n.get("days").is_some()))
        .expect("minio: no rule expires noncurrent versions (the bucket is versioned: expired data would stay forever)");
    assert!(
        noncurrent.tags.is_empty(),
        "minio: the noncurrent-version rule must not depend on tags"
    );
}

/// The backup host must not be able to delete its backups (§7).
#[test]
fn writer_policies_grant_no_delete() {
    let aws = module("aws-s3");
    let documents = blocks(&aws, "data", "aws_iam_policy_document");
    let (_, writer) = documents
        .iter()
        .find(|(name, _)| *name == "writer")
        .expect("aws-s3: no aws_iam_policy_document.writer");
    let statements = writer
        .get("statement")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let dynamic_statements = writer
        .get("dynamic")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|block| first(block.get("statement")?, "content"));
    let actions: Vec<&str> = statements
        .chain(dynamic_statements)
        .flat_map(|statement| {
            statement
                .get("actions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|action| string(Some(action)))
        .collect();
    assert!(
        actions.contains(&"s3:PutObject"),
        "aws-s3: the writer cannot upload: {actions:?}"
    );
    assert!(
        actions
            .iter()
            .all(|action| !action.starts_with("s3:Delete") && !action.contains('*')),
        "aws-s3: the writer may delete: {actions:?}"
    );

    // MinIO's documents are jsonencode() expressions: check their text.
    let minio = module("minio");
    let writer = minio
        .iter()
        .filter_map(|file| file.get("locals")?.as_array())
        .flatten()
        .find_map(|locals| string(locals.get("policy_documents")?.get("writer")))
        .expect("minio: no local.policy_documents.writer");
    assert!(
        writer.contains("s3:PutObject"),
        "minio: the writer cannot upload: {writer}"
    );
    assert!(
        !writer.contains("s3:Delete") && !writer.contains("s3:*"),
        "minio: the writer may delete: {writer}"
    );
}
