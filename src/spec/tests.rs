//! Specification tests for the spec layer: the corpus of valid and invalid files under
//! `tests/spec_corpus/`, the example in `clusters/`, and the defaults a minimal spec resolves to.

use std::path::{Path, PathBuf};

use super::*;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn corpus(kind: &str) -> Vec<PathBuf> {
    let folder = repo_file(&format!("tests/spec_corpus/{kind}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

/// What an invalid corpus file's first line promises: `# expect: LINE:COLUMN FIELD MESSAGE-PART`.
struct Expectation {
    line: usize,
    column: usize,
    field: String,
    message_part: String,
}

fn expectation(path: &Path, text: &str) -> Result<Expectation, String> {
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").ok_or_else(|| {
        format!(
            "{}: first line must be `# expect: LINE:COL FIELD MESSAGE`",
            path.display()
        )
    })?;
    let mut parts = rest.splitn(3, ' ');
    let position = parts.next().unwrap_or_default();
    let field = parts.next().unwrap_or_default().to_owned();
    let message_part = parts.next().unwrap_or_default().to_owned();
    let (line, column) = position
        .split_once(':')
        .and_then(|(l, c)| Some((l.parse().ok()?, c.parse().ok()?)))
        .ok_or_else(|| {
            format!(
                "{}: expectation {rest:?} does not start with LINE:COL",
                path.display()
            )
        })?;
    if field.is_empty() || message_part.is_empty() {
        return Err(format!(
            "{}: expectation {rest:?} needs a field and a message",
            path.display()
        ));
    }
    Ok(Expectation {
        line,
        column,
        field,
        message_part,
    })
}

fn first_problem(error: &SpecError) -> (usize, usize, String, String) {
    match error.problems()[0] {
        SpecError::Invalid {
            line,
            column,
            field,
            message,
            ..
        } => (*line, *column, field.clone(), message.clone()),
        other => panic!("expected an Invalid problem, got {other:?}"),
    }
}

#[test]
fn every_invalid_spec_in_the_corpus_reports_its_expected_first_problem() {
    let files = corpus("invalid");
    assert!(
        files.len() >= 35,
        "the invalid corpus has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let outcome = ClusterSpec::load(path);
        let Err(error) = outcome else {
            failures.push(format!(
                "{}: loaded, but should have failed",
                path.display()
            ));
            continue;
        };
        let (line, column, field, message) = first_problem(&error);
        let actual = format!("# expect: {line}:{column} {field} {message}");
        match expectation(path, &text) {
            Err(why) => failures.push(format!("{why}\n  actual: {actual}")),
            Ok(expected) => {
                if (expected.line, expected.column) != (line, column)
                    || expected.field != field
                    || !message.contains(&expected.message_part)
                {
                    failures.push(format!(
                        "{}:\n  expected: {}\n  actual:   {actual}",
                        path.display(),
                        text.lines().next().unwrap_or_default()
                    ));
                }
            }
        }
        assert_eq!(error.exit_code(), 2);
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files disagree:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_valid_spec_in_the_corpus_loads() {
    let files = corpus("valid");
    assert!(files.len() >= 5);
    for path in files {
        if let Err(error) = ClusterSpec::load(&path) {
            panic!("{} should be valid:\n{error}", path.display());
        }
    }
}

#[test]
fn the_localstack_example_loads_with_two_derived_subnets() {
    let spec = ClusterSpec::load(&repo_file("clusters/localstack.toml")).unwrap();
    assert_eq!(spec.name.as_str(), "demo");
    assert_eq!(spec.region.as_str(), "us-east-1");
    let zones: Vec<&str> = spec.zones.iter().map(Zone::as_str).collect();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"]);
    assert_eq!(spec.network.vpc_cidr.to_string(), "10.42.0.0/16");
    assert_eq!(spec.network.admin_cidrs[0].to_string(), "10.42.0.1/32");
    let subnets: Vec<String> = spec
        .network
        .subnets
        .iter()
        .map(|s| format!("{} {}", s.zone, s.cidr))
        .collect();
    assert_eq!(
        subnets,
        ["us-east-1a 10.42.0.0/20", "us-east-1b 10.42.16.0/20"]
    );
    assert_eq!(spec.ssh.key, SshKeySource::Generated);
    assert_eq!(spec.ssh.user, "admin");
    assert_eq!(
        spec.api,
        ApiConfig {
            port: 6443,
            load_balancer: true
        }
    );
    assert_eq!(spec.masters.count, 1);
    assert_eq!(spec.masters.instance_type, "t3.medium");
    assert_eq!(spec.workers.len(), 1);
    assert_eq!(spec.workers[0].name.as_str(), "default");
    assert_eq!(spec.workers[0].count, 2);
    assert_eq!(spec.workers[0].instance_type, "t3.small");
    assert!(matches!(spec.workers[0].image, ImageRef::Name { .. }));
}

const MINIMAL: &str = r#"
[cluster]
name = "demo"
region = "us-east-1"
availability_zones = ["us-east-1a", "us-east-1b"]

[network]
vpc_cidr = "10.42.0.0/16"
admin_cidrs = ["10.42.0.1/32"]

[masters]
count = 1
instance_type = "t3.medium"
image = "ami-0123456789abcdef0"

[[workers]]
name = "default"
count = 2
instance_type = "t3.small"
image = { name = "debian-12-*" }
"#;

#[test]
fn a_minimal_spec_resolves_every_default() {
    let spec = ClusterSpec::parse(Path::new("clusters/minimal.toml"), MINIMAL).unwrap();
    assert_eq!(spec.source, PathBuf::from("clusters/minimal.toml"));
    assert!(spec.tags.is_empty());
    assert_eq!(
        spec.network.subnets,
        vec![
            SubnetSpec {
                zone: Zone::parse("us-east-1a").unwrap(),
                cidr: "10.42.0.0/20".parse().unwrap(),
            },
            SubnetSpec {
                zone: Zone::parse("us-east-1b").unwrap(),
                cidr: "10.42.16.0/20".parse().unwrap(),
            },
        ]
    );
    assert_eq!(
        spec.ssh,
        SshConfig {
            user: "admin".to_owned(),
            key: SshKeySource::Generated,
        }
    );
    assert_eq!(
        spec.api,
        ApiConfig {
            port: 6443,
            load_balancer: true
        }
    );
    assert_eq!(
        spec.masters,
        NodePool {
            name: PoolName::masters(),
            role: Role::Master,
            count: 1,
            instance_type: "t3.medium".to_owned(),
            image: ImageRef::Id("ami-0123456789abcdef0".to_owned()),
            disk_gb: 20,
            labels: BTreeMap::new(),
        }
    );
    assert_eq!(spec.workers[0].role, Role::Worker);
    assert_eq!(spec.workers[0].disk_gb, 20);
    assert_eq!(
        spec.workers[0].image,
        ImageRef::Name {
            pattern: "debian-12-*".to_owned(),
            owner: None,
        }
    );
}

#[test]
fn derived_subnets_take_vpc_prefix_plus_four_in_zone_order() {
    let text = MINIMAL.replace("10.42.0.0/16", "192.168.4.0/24").replace(
        r#"["us-east-1a", "us-east-1b"]"#,
        r#"["us-east-1c", "us-east-1a", "us-east-1b", "us-east-1d", "us-east-1e", "us-east-1f"]"#,
    );
    let spec = ClusterSpec::parse(Path::new("x.toml"), &text).unwrap();
    let subnets: Vec<String> = spec
        .network
        .subnets
        .iter()
        .map(|s| format!("{} {}", s.zone, s.cidr))
        .collect();
    assert_eq!(
        subnets,
        [
            "us-east-1c 192.168.4.0/28",
            "us-east-1a 192.168.4.16/28",
            "us-east-1b 192.168.4.32/28",
            "us-east-1d 192.168.4.48/28",
            "us-east-1e 192.168.4.64/28",
            "us-east-1f 192.168.4.80/28",
        ]
    );
}

#[test]
fn explicit_subnets_are_ordered_like_the_zones() {
    let spec =
        ClusterSpec::load(&repo_file("tests/spec_corpus/valid/explicit_subnets.toml")).unwrap();
    let zones: Vec<&Zone> = spec.network.subnets.iter().map(|s| &s.zone).collect();
    assert_eq!(zones, spec.zones.iter().collect::<Vec<_>>());
    assert_eq!(spec.network.subnets[0].cidr.to_string(), "10.42.64.0/24");
    assert_eq!(spec.network.subnets[1].cidr.to_string(), "10.42.128.0/20");
}

#[test]
fn slots_go_round_the_subnets() {
    let spec = ClusterSpec::parse(Path::new("x.toml"), MINIMAL).unwrap();
    assert_eq!(spec.subnet_for_slot(0).zone.as_str(), "us-east-1a");
    assert_eq!(spec.subnet_for_slot(1).zone.as_str(), "us-east-1b");
    assert_eq!(spec.subnet_for_slot(2).zone.as_str(), "us-east-1a");
    assert_eq!(spec.subnet_for_slot(u32::MAX).zone.as_str(), "us-east-1b");
}

#[test]
fn pools_list_masters_first_and_can_be_found_by_name() {
    let spec = ClusterSpec::load(&repo_file("tests/spec_corpus/valid/several_pools.toml")).unwrap();
    let names: Vec<&str> = spec.pools().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["masters", "web", "batch", "spare"]);
    assert_eq!(spec.pool("masters").unwrap().role, Role::Master);
    assert_eq!(spec.pool("batch").unwrap().count, 5);
    assert_eq!(spec.pool("spare").unwrap().count, 0);
    assert!(spec.pool("nope").is_none());
}

#[test]
fn three_masters_are_allowed() {
    let spec = ClusterSpec::load(&repo_file("tests/spec_corpus/valid/three_masters.toml")).unwrap();
    assert_eq!(spec.masters.count, 3);
    assert_eq!(spec.zones.len(), 3);
    assert_eq!(spec.backups, crate::spec::Backups { snapshot_every_minutes: 15, snapshots_kept: 8 });
    let ha = ClusterSpec::load(&repo_file("clusters/localstack-ha.toml")).unwrap();
    assert_eq!((ha.masters.count, ha.zones.len(), ha.backups), (3, 3, crate::spec::Backups::default()));
    let health = crate::spec::Health { node_grace_seconds: 20, eviction_seconds: 60, replace_not_ready_after_seconds: Some(120), ..Default::default() };
    assert_eq!(spec.health, health, "given fields are read, the others default");
    assert_eq!(ha.health, crate::spec::Health::default());
    assert_eq!((ha.health.node_grace_seconds, ha.health.eviction_seconds, ha.health.unhealthy_zone_percent), (40, 300, 55), "Kubernetes' defaults");
}

#[test]
fn a_user_key_is_resolved_next_to_the_spec_with_its_public_half() {
    let path = repo_file("tests/spec_corpus/valid/user_key.toml");
    let spec = ClusterSpec::load(&path).unwrap();
    let folder = path.parent().unwrap();
    assert_eq!(
        spec.ssh.key,
        SshKeySource::File {
            private: folder.join("../keys/id_test"),
            public: folder.join("../keys/id_test.pub"),
        }
    );
    assert_eq!(spec.ssh.user, "debian");
}

#[test]
fn an_error_displays_as_path_line_column_field_message() {
    let text = MINIMAL.replace("count = 2", "count = -2");
    let error = ClusterSpec::parse(Path::new("clusters/x.toml"), &text).unwrap_err();
    assert_eq!(
        error.to_string(),
        "clusters/x.toml:18:9: workers[0].count must be at least 0, got -2"
    );
}

#[test]
fn all_problems_are_reported_one_per_line_in_document_order() {
    let text = MINIMAL
        .replace("count = 2", "count = -2")
        .replace(r#"name = "demo""#, r#"name = "Demo""#)
        .replace("count = 1", "count = 2");
    let error = ClusterSpec::parse(Path::new("x.toml"), &text).unwrap_err();
    let lines: Vec<String> = error.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "x.toml:3:8: cluster.name \"Demo\" may contain only lowercase letters, digits and '-', found 'D'",
            "x.toml:12:9: masters.count must be 1 or 3, got 2 (3 keeps a quorum when one master is lost)",
            "x.toml:18:9: workers[0].count must be at least 0, got -2",
        ]
    );
    assert_eq!(error.problems().len(), 3);
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let error = ClusterSpec::load(Path::new("/nonexistent/spec.toml")).unwrap_err();
    assert!(matches!(error, SpecError::Io { .. }));
    assert_eq!(
        error.to_string(),
        "reading cluster spec /nonexistent/spec.toml"
    );
    assert_eq!(error.exit_code(), 2);
}

#[test]
fn the_spec_serializes_to_json_for_dry_runs() {
    let spec = ClusterSpec::parse(Path::new("x.toml"), MINIMAL).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["name"], "demo");
    assert_eq!(json["network"]["vpc_cidr"], "10.42.0.0/16");
    assert_eq!(json["network"]["admin_cidrs"][0], "10.42.0.1/32");
    assert_eq!(json["network"]["subnets"][1]["cidr"], "10.42.16.0/20");
    assert_eq!(json["ssh"]["key"]["kind"], "generated");
    assert_eq!(json["masters"]["role"], "master");
    assert_eq!(json["masters"]["image"]["id"], "ami-0123456789abcdef0");
    assert_eq!(
        json["workers"][0]["image"]["name"]["pattern"],
        "debian-12-*"
    );
}
