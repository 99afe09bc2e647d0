//! The HTTPS client of every AWS call (hyper 1, rustls with ring), against a fake EC2 endpoint on
//! loopback that serves TLS with a certificate of its own CA. LocalStack speaks plain HTTP, so
//! these are the tests in which an AWS call goes through TLS. No LocalStack needed.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::{Cloud, ErrorKind, Tags};
use clusterctl::pki::{ClusterCa, Issued};
use common::{root, temp_home};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the fake endpoint saw on one connection.
#[derive(Debug)]
enum Seen {
    /// A request that arrived over TLS: its request line and headers, and its body.
    Request { head: String, body: String },
    /// The TLS handshake failed (the client refused the certificate).
    HandshakeFailed(String),
}

/// The message of the fake endpoint's error answer, to recognise it in clusterctl's output.
const REFUSAL: &str = "refused by the transport test endpoint";

/// Serves HTTPS on a loopback port with `issued`, answers every request with an AuthFailure (in EC2's
/// or the load balancer API's shape), and
/// reports each connection.
async fn fake_ec2(issued: &Issued) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = seen.send(Seen::HandshakeFailed(e.to_string()));
                        return;
                    }
                };
                let Some((head, body)) = read_request(&mut tls).await else { return };
                let elb = head.to_ascii_lowercase().contains("/elasticloadbalancing/aws4_request");
                let _ = seen.send(Seen::Request { head, body });
                // Each service's error shape: `status` asks EC2 and the load balancer API at
                // once, and whichever answers first is the error it reports.
                let xml = if elb {
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>AuthFailure</Code><Message>{REFUSAL}</Message></Error><RequestId>transport-test</RequestId></ErrorResponse>"
                    )
                } else {
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>AuthFailure</Code><Message>{REFUSAL}</Message></Error></Errors><RequestID>transport-test</RequestID></Response>"
                    )
                };
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/xml;charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{xml}",
                    xml.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// Reads one HTTP/1.1 request (headers, then `content-length` bytes of body).
async fn read_request(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some((head, String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned()));
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A CA and the endpoint's certificate for 127.0.0.1, issued by it.
fn endpoint_certificate() -> (ClusterCa, Issued) {
    let ca = ClusterCa::generate("transport-test").unwrap();
    let issued = ca.issue_server(&[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
    (ca, issued)
}

/// Serves the instance metadata service's credential paths (IMDSv2) over plain HTTP on loopback,
/// as an EC2 instance with a role sees them; counts the requests it answered.
async fn fake_imds() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Some((head, _)) = read_request(&mut tcp).await else { return };
                let line = head.lines().next().unwrap_or_default().to_string();
                let (status, extra, body) = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
                    ["PUT", "/latest/api/token"] => ("200 OK", "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n", "imds-token".to_string()),
                    ["GET", "/latest/meta-data/iam/security-credentials/"] => ("200 OK", "", "clusterctl-test-master".to_string()),
                    ["GET", "/latest/meta-data/iam/security-credentials/clusterctl-test-master"] => (
                        "200 OK",
                        "",
                        r#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAIMDSTEST","SecretAccessKey":"imds-secret","Token":"imds-session-token","Expiration":"2099-01-01T00:00:00Z"}"#.to_string(),
                    ),
                    _ => ("404 Not Found", "", String::new()),
                };
                let _ = seen.send(line);
                let answer = format!("HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// Runs `clusterctl status` on the example spec with only `env` (and a home of its own: no
/// profile files), trusting `ca` through `SSL_CERT_FILE` (rustls-native-certs reads it).
async fn status_with(ca: &ClusterCa, env: &[(&str, String)]) -> std::process::Output {
    let home = temp_home();
    let ca_file = home.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let nothing = home.path().join("none");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command
        .args(["status", "-f", root().join("clusters/localstack.toml").to_str().unwrap()])
        .env_clear()
        .env("HOME", home.path())
        .env("CLUSTERCTL_HOME", home.path().join("clusterctl"))
        .env("AWS_CONFIG_FILE", &nothing)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nothing)
        .env("SSL_CERT_FILE", &ca_file);
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(120), command.output()).await.expect("clusterctl status answered within 120 s").unwrap()
}

/// Checks that `status` failed on the endpoint's AuthFailure, which reached the endpoint signed
/// with `key_id`, and returns the request's headers (lower case).
async fn refused_request(out: &std::process::Output, seen: &mut mpsc::UnboundedReceiver<Seen>, key_id: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an AuthFailure is an operational failure:\n{stderr}");
    assert!(stderr.contains(REFUSAL), "the endpoint's answer came back over TLS:\n{stderr}");
    // The first signed request, of EC2 or of the load balancer API: `status` asks both at once
    // and stops at the first refusal, so the other may never be sent (with credentials from IMDS,
    // the EC2 call was still fetching them in one run out of several, and a wait for it hung).
    let (head, body) = loop {
        match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
            Ok(Some(Seen::Request { head, body })) if head.to_ascii_lowercase().contains("/aws4_request") => break (head.to_ascii_lowercase(), body),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("no signed request reached the endpoint:\n{stderr}"),
        }
    };
    assert!(head.starts_with("post / http/1.1"), "{head}");
    assert!(head.contains(&format!("authorization: aws4-hmac-sha256 credential={}/", key_id.to_ascii_lowercase())), "signed with {key_id}:\n{head}");
    assert!(
        head.contains("/us-east-1/ec2/aws4_request") || head.contains("/us-east-1/elasticloadbalancing/aws4_request"),
        "for EC2 or the load balancer API in the spec's region:\n{head}"
    );
    assert!(body.contains("Action=Describe"), "{body}");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_calls_go_over_https_to_aws_endpoint_url_signed_with_credentials_from_the_environment() {
    let (ca, issued) = endpoint_certificate();
    let (addr, mut seen) = fake_ec2(&issued).await;
    let out = status_with(
        &ca,
        &[
            ("AWS_ENDPOINT_URL", format!("https://{addr}")),
            ("AWS_ACCESS_KEY_ID", "AKIDTRANSPORTTEST".into()),
            ("AWS_SECRET_ACCESS_KEY", "transport-test-secret".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ],
    )
    .await;
    let head = refused_request(&out, &mut seen, "AKIDTRANSPORTTEST").await;
    assert!(!head.contains("x-amz-security-token"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_instance_metadata_when_the_environment_has_none() {
    // A master on AWS has no credentials but its instance profile's, served by IMDS: the
    // credential providers go through the same HTTP client as the calls.
    let (ca, issued) = endpoint_certificate();
    let (addr, mut seen) = fake_ec2(&issued).await;
    let (imds, mut imds_seen) = fake_imds().await;
    let out = status_with(
        &ca,
        &[("AWS_ENDPOINT_URL", format!("https://{addr}")), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("http://{imds}"))],
    )
    .await;
    let head = refused_request(&out, &mut seen, "ASIAIMDSTEST").await;
    assert!(head.contains("x-amz-security-token: imds-session-token"), "{head}");
    let mut asked = Vec::new();
    while let Ok(line) = imds_seen.try_recv() {
        asked.push(line);
    }
    assert!(asked.iter().any(|l| l.starts_with("PUT /latest/api/token")), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_endpoint_whose_certificate_no_trusted_root_signed_is_refused() {
    let (_ca, issued) = endpoint_certificate();
    let (addr, mut seen) = fake_ec2(&issued).await;
    let options = AwsOptions {
        region: Some("us-east-1".into()),
        profile: None,
        endpoint_url: Some(format!("https://{addr}")),
        static_credentials: Some(("AKIDTRANSPORTTEST".into(), "transport-test-secret".into())),
    };
    let cloud = AwsCloud::connect(&options, "us-east-1").await;

    let err = cloud.vpcs(&Tags::new()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transport, "{err}");
    assert!(err.to_string().contains("certificate"), "says why: {err}");
    match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.unwrap() {
        Some(Seen::HandshakeFailed(why)) => assert!(why.contains("alert"), "the client sent a TLS alert: {why}"),
        other => panic!("the client must stop at the handshake, got {other:?}"),
    }
    assert!(seen.try_recv().is_err(), "no request was sent");
}
