//! The verifier against the fake cloud, with a test identity key (`test-identity.key`, made for
//! these tests only) standing in for the cloud's.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::cloud::{LaunchRequest, Tags};

const KEY: &str = include_str!("test-identity.key");
const CERT: &str = include_str!("test-identity.crt");
const OTHER_CERT: &str = include_str!("test-other.crt");

fn sign(document: &[u8]) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(KEY.as_bytes()).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&pem.contents).unwrap();
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), document, &mut signature).unwrap();
    STANDARD.encode(signature)
}

fn document(id: &str, region: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({"accountId": "000000000000", "instanceId": id, "region": region, "privateIp": "10.9.0.4"})).unwrap()
}

/// A fake cloud with machines `c1-default-0` (cluster c1) and `c2-default-0` (cluster c2).
async fn cloud() -> (Arc<dyn Cloud>, String, String) {
    let cloud = FakeCloud::new();
    let image = cloud.image("ami-0debian12000001").await.unwrap();
    cloud.import_key_pair("k", "ssh-ed25519 AAAA", &Tags::new()).await.unwrap();
    let mut ids = Vec::new();
    for (cluster, name) in [("c1", "c1-default-0"), ("c2", "c2-default-0")] {
        let tags: Tags = [(OWNER_TAG.to_string(), cluster.to_string()), ("Name".to_string(), name.to_string())].into();
        let vpc = cloud.create_vpc(format!("10.{}.0.0/16", ids.len() + 9).parse().unwrap(), &tags).await.unwrap();
        let subnet = cloud.create_subnet(&vpc.id, "us-east-1a", format!("10.{}.0.0/20", ids.len() + 9).parse().unwrap(), &tags).await.unwrap();
        let request = LaunchRequest {
            image: image.clone(),
            instance_type: "t3.small".into(),
            subnet_id: subnet.id,
            security_group_ids: vec![],
            key_name: "k".into(),
            disk_gb: 8,
            client_token: name.into(),
            user_data: None,
            instance_profile: None,
            tags,
        };
        ids.push(cloud.run_instance(&request).await.unwrap().id);
    }
    (Arc::new(cloud), ids[0].clone(), ids[1].clone())
}

fn verifier(cloud: Arc<dyn Cloud>, cert: &str) -> InstanceIdentityVerifier {
    InstanceIdentityVerifier::new(cloud, "c1", "us-east-1", CertificateSource::Pem(cert.into()))
}

#[tokio::test]
async fn a_machine_of_the_cluster_gets_its_own_name_only() {
    let (cloud, mine, _) = cloud().await;
    let v = verifier(cloud, CERT);
    let doc = document(&mine, "us-east-1");
    assert_eq!(v.verify("c1-default-0", &doc, &sign(&doc)).await, Ok(mine.clone()));
    let err = v.verify("c1-default-1", &doc, &sign(&doc)).await.unwrap_err();
    assert!(err.contains("is named \"c1-default-0\", not \"c1-default-1\""), "{err}");
}

#[tokio::test]
async fn a_forged_or_foreign_identity_is_refused() {
    let (cloud, mine, theirs) = cloud().await;
    let v = verifier(cloud.clone(), CERT);
    // Edited after signing, or signed by a key that is not the cloud's.
    let doc = document(&mine, "us-east-1");
    let edited = document("i-0123456789abcdef0", "us-east-1");
    assert!(v.verify("c1-default-0", &edited, &sign(&doc)).await.unwrap_err().contains("does not verify"));
    let stranger = verifier(cloud.clone(), OTHER_CERT);
    assert!(stranger.verify("c1-default-0", &doc, &sign(&doc)).await.unwrap_err().contains("does not verify"));
    // Another cluster's machine, another region, a machine the cloud does not have, a dead one.
    let doc = document(&theirs, "us-east-1");
    assert!(v.verify("c2-default-0", &doc, &sign(&doc)).await.unwrap_err().contains("not a machine of cluster \"c1\""));
    let doc = document(&mine, "eu-west-1");
    assert!(v.verify("c1-default-0", &doc, &sign(&doc)).await.unwrap_err().contains("region"));
    let doc = document("i-0123456789abcdef0", "us-east-1");
    assert!(v.verify("c1-default-0", &doc, &sign(&doc)).await.unwrap_err().contains("has no instance"));
    cloud.terminate_instances(std::slice::from_ref(&mine)).await.unwrap();
    let doc = document(&mine, "us-east-1");
    let err = v.verify("c1-default-0", &doc, &sign(&doc)).await.unwrap_err();
    assert!(err.contains("is ") && !err.contains("Running"), "{err}");
}

#[tokio::test]
async fn an_unreadable_certificate_refuses_every_join() {
    let (cloud, mine, _) = cloud().await;
    let v = InstanceIdentityVerifier::new(cloud, "c1", "us-east-1", CertificateSource::Url("http://127.0.0.1:9/none".into()));
    let doc = document(&mine, "us-east-1");
    assert!(v.verify("c1-default-0", &doc, &sign(&doc)).await.unwrap_err().contains("could not be read"));
}

#[tokio::test]
async fn on_aws_the_spec_names_the_certificate_and_without_one_nothing_is_checked() {
    let (cloud, mine, _) = cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = |spec: &str| {
        let path = dir.path().join(spec);
        std::fs::copy(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec_corpus/valid").join(spec), &path).unwrap();
        CloudSettings { region: "us-east-1".into(), endpoint_url: None, access_key_id: None, secret_access_key: None, spec_path: path, ssh_key_path: "/k".into() }
    };
    assert!(super::verifier(&settings("minimal.toml"), cloud.clone(), "c1").is_none(), "no certificate on AWS: no check");
    let v = super::verifier(&settings("instance_identity_certificate.toml"), cloud, "c1").expect("the spec's certificate");
    let doc = document(&mine, "us-east-1");
    assert_eq!(v.verify("c1-default-0", &doc, &sign(&doc)).await, Ok(mine));
}
