//! SSH into realized machines: console-pinned host keys, sudo, checked uploads, refusals.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clusterctl::bootstrap::hostkeys;
use clusterctl::bootstrap::ssh::{connect_async, FileUpload, HostKeyTrust, SshError, SshTarget};
use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::{Cloud, Instance, Resilient, RetryPolicy};
use clusterctl::provision;
use common::*;

/// The address of an instance, after checking that it belongs to a container the harness made
/// (never dial an address LocalStack invented).
fn realized_address(instance: &Instance) -> SocketAddr {
    let ip = instance.public_ip.or(instance.private_ip).expect("instance has an address");
    // the realizer wires each node's eth0 itself (localstack/.../nodenet.py): ask the container
    let out = std::process::Command::new("docker")
        .args(["exec", &instance.id, "ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .expect("docker exec");
    let addresses = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && addresses.split_whitespace().any(|a| a.split('/').next() == Some(&ip.to_string())),
        "instance {} at {ip} is not a container of the harness (is the realizer on?): {addresses}",
        instance.id
    );
    SocketAddr::from((ip, 22))
}

#[tokio::test(flavor = "multi_thread")]
async fn realized_machines_are_reached_over_ssh_with_pinned_host_keys() {
    harness();
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-ssh", 64, 1);
    let _guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    assert_ok(&clusterctl(home.path(), &["create", "-f", spec_path.to_str().unwrap(), "--infra-only"]), "create");

    let aws = AwsCloud::connect(&AwsOptions::default(), "us-east-1").await;
    let cloud = Resilient::new(Arc::new(aws), RetryPolicy::default());
    let inv = provision::discover(&cloud, "it-ssh").await.unwrap();
    assert_eq!(inv.instances.len(), 2);
    let key = home.path().join("it-ssh/ssh/id_ed25519");

    let mut consoles = Vec::new();
    for instance in &inv.instances {
        let console = cloud.console_output(&instance.id).await.unwrap().unwrap_or_default();
        let keys = hostkeys::from_console(&console);
        assert!(!keys.is_empty(), "no host key block in the console of {}:\n{console}", instance.id);
        consoles.push(keys);
    }

    for (instance, keys) in inv.instances.iter().zip(&consoles) {
        let node = instance.tags["Name"].clone();
        let target = SshTarget { node: node.clone(), address: realized_address(instance), user: "admin".into(), private_key: key.clone(), trust: HostKeyTrust::Pinned(keys.clone()) };
        let session = connect_async(target, Duration::from_secs(60)).await.unwrap();
        assert!(keys.contains(session.host_key()), "the offered key is one printed on the console");
        let session = tokio::task::spawn_blocking(move || {
            assert_eq!(session.run("whoami").unwrap().stdout.trim(), "admin");
            session.sudo("true").unwrap();
            let first = session.upload(b"secret=1\n", "/etc/clusterctl/test.conf", 0o600).unwrap();
            let again = session.upload(b"secret=1\n", "/etc/clusterctl/test.conf", 0o600).unwrap();
            assert!(first && !again, "an identical file is not sent again");
            let stat = session.sudo("stat -c '%a %U' /etc/clusterctl/test.conf && cat /etc/clusterctl/test.conf").unwrap().stdout;
            assert_eq!(stat, "600 root\nsecret=1\n");
            assert!(session.upload(b"secret=2\n", "/etc/clusterctl/test.conf", 0o600).unwrap());
            assert_eq!(session.sudo("cat /etc/clusterctl/test.conf").unwrap().stdout, "secret=2\n");
            let leftovers = session.run("ls /tmp | grep -c clusterctl-upload || true").unwrap().stdout;
            assert_eq!(leftovers.trim(), "0", "temporary upload files are removed");

            // Several files at once: only those that differ are sent; modes are set either way.
            let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
            let files = |a: &'static [u8], b: &'static [u8]| {
                [
                    FileUpload { contents: a, path: "/etc/clusterctl/batch/a.conf", mode: 0o600 },
                    FileUpload { contents: b, path: "/etc/clusterctl/batch/it's b.sh", mode: 0o755 },
                ]
            };
            assert_eq!(session.upload_files(&files(b"a=1\n", b"echo b\n")).unwrap(), vec![true, true]);
            assert_eq!(session.upload_files(&files(b"a=1\n", b"echo b\n")).unwrap(), vec![false, false], "identical files are not sent again");
            session.sudo("chmod 644 /etc/clusterctl/batch/a.conf").unwrap();
            assert_eq!(session.upload_files(&files(b"a=2\n", b"echo b\n")).unwrap(), vec![true, false]);
            let stat = session.sudo("stat -c '%a %U %n' /etc/clusterctl/batch/* && cat /etc/clusterctl/batch/a.conf").unwrap().stdout;
            assert_eq!(stat, "600 root /etc/clusterctl/batch/a.conf\n755 root /etc/clusterctl/batch/it's b.sh\na=2\n");
            let bin = [FileUpload { contents: &binary, path: "/etc/clusterctl/batch/bytes", mode: 0o600 }];
            assert_eq!(session.upload_files(&bin).unwrap(), vec![true]);
            assert_eq!(session.download("/etc/clusterctl/batch/bytes").unwrap(), binary, "any bytes arrive whole");
            let leftovers = session.sudo("ls -a /etc/clusterctl/batch | grep -c clusterctl-new || true").unwrap().stdout;
            assert_eq!(leftovers.trim(), "0", "no temporary files are left beside the targets");
            session
        })
        .await
        .unwrap();
        drop(session);
    }

    // A machine whose host key differs from the pinned one is refused, naming it.
    let first = &inv.instances[0];
    let target = SshTarget {
        node: "impostor-check".into(),
        address: realized_address(first),
        user: "admin".into(),
        private_key: key.clone(),
        trust: HostKeyTrust::Pinned(consoles[1].clone()),
    };
    match connect_async(target, Duration::from_secs(20)).await {
        Err(SshError::HostKeyMismatch { node, offered, .. }) => {
            assert_eq!(node, "impostor-check");
            assert!(offered.starts_with("SHA256:"));
        }
        other => panic!("expected a host key mismatch, got {:?}", other.map(|s| s.node().to_string())),
    }

    // Root may not log in, even with the cluster's key.
    let target = SshTarget { node: "root-check".into(), address: realized_address(first), user: "root".into(), private_key: key.clone(), trust: HostKeyTrust::Pinned(consoles[0].clone()) };
    match connect_async(target, Duration::from_secs(3)).await {
        Err(SshError::Unreachable { last, .. }) => assert!(last.contains("authenticating as root"), "{last}"),
        other => panic!("root login must be refused, got {:?}", other.map(|s| s.node().to_string())),
    }
}
