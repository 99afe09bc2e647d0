use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}, "annotations": {"note": "x"}},
        "spec": spec,
    }))
    .unwrap()
}

fn ctx() -> PodContext {
    PodContext { pod_ip: Some("100.64.1.5".parse().unwrap()), host_ip: "10.1.0.4".parse().unwrap(), node_cpu_millis: 2000, node_memory_bytes: 1 << 30 }
}

fn sources() -> Sources {
    let key = |secret: bool, name: &str| SourceKey { secret, namespace: "shop".into(), name: name.into() };
    let data = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect::<BTreeMap<_, _>>());
    HashMap::from([
        (key(false, "settings"), data(&[("mode", "fast"), ("level", "3"), ("bad=name", "x")])),
        (key(true, "db"), data(&[("password", "s3cret")])),
        (key(false, "gone"), None),
    ])
}

fn env_of(p: &Pod) -> Result<BTreeMap<String, String>, String> {
    container_env(p, &p.spec.containers[0], &sources(), &ctx()).map(|e| e.into_iter().collect())
}

#[test]
fn env_comes_from_config_maps_secrets_and_the_pods_fields_and_env_wins_over_env_from() {
    let p = pod(json!({"containers": [{"name": "app", "image": "i",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "db"}}],
        "env": [
            {"name": "CFG_MODE", "value": "slow"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "URL", "value": "http://$(POD):$(CFG_level)/$(NOPE)/$$(POD)"},
            {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}
        ],
        "resources": {"limits": {"memory": "64Mi"}}}]}));
    let env = env_of(&p).unwrap();
    assert_eq!(env["CFG_MODE"], "slow", "env wins over envFrom");
    assert_eq!(env["CFG_level"], "3");
    assert!(!env.contains_key("CFG_bad=name"), "names that cannot be variables are skipped");
    assert_eq!(env["password"], "s3cret");
    assert_eq!(env["PW"], "s3cret");
    assert_eq!((env["POD"].as_str(), env["APP"].as_str(), env["IP"].as_str(), env["HOST"].as_str()), ("web-1", "web", "100.64.1.5", "10.1.0.4"));
    assert_eq!(env["MEM"], "64");
    assert_eq!(env["URL"], "http://web-1:3/$(NOPE)/$(POD)");
    assert!(!env.contains_key("MAYBE"), "an optional missing source sets nothing");
}

#[test]
fn a_missing_key_or_source_is_a_config_error_with_kubelets_words() {
    let missing_key = pod(json!({"containers": [{"name": "app", "image": "i", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}]}]}));
    assert_eq!(env_of(&missing_key).unwrap_err(), "couldn't find key user in Secret shop/db");
    let missing = pod(json!({"containers": [{"name": "app", "image": "i", "envFrom": [{"configMapRef": {"name": "gone"}}]}]}));
    assert_eq!(env_of(&missing).unwrap_err(), "configmap \"gone\" not found");
    let unread = pod(json!({"containers": [{"name": "app", "image": "i", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "elsewhere", "key": "k"}}}]}]}));
    assert!(env_of(&unread).unwrap_err().contains("could not be read"));
    let p = pod(json!({"containers": [{"name": "app", "image": "i", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]}]}));
    assert!(env_of(&p).unwrap_err().contains("spec.nope"));
}

#[test]
fn referenced_names_every_source_of_env_and_volumes() {
    let p = pod(json!({"containers": [{"name": "app", "image": "i", "envFrom": [{"configMapRef": {"name": "a"}}], "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "b", "key": "k"}}}]}],
        "initContainers": [{"name": "init", "image": "i", "envFrom": [{"secretRef": {"name": "c"}}]}],
        "volumes": [{"name": "v1", "configMap": {"name": "d"}}, {"name": "v2", "secret": {"secretName": "e"}},
                    {"name": "v3", "projected": {"sources": [{"configMap": {"name": "f"}}, {"secret": {"name": "g"}}]}}]}));
    let names: Vec<(bool, String)> = referenced(&p).into_iter().map(|k| (k.secret, k.name)).collect();
    assert_eq!(names, vec![(false, "a".into()), (false, "d".into()), (false, "f".into()), (true, "b".into()), (true, "c".into()), (true, "e".into()), (true, "g".into())]);
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn volumes_are_written_atomically_and_follow_their_source() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = VolumeRoots { disk: tmp.path().join("disk"), memory: tmp.path().join("mem"), sized_tmpfs: false };
    let p = pod(json!({"containers": [{"name": "app", "image": "i", "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/conf"}, {"name": "conf", "mountPath": "/etc/level", "subPath": "level"}]}],
        "volumes": [
            {"name": "conf", "configMap": {"name": "settings", "items": [{"key": "mode", "path": "sub/mode", "mode": 0o600}, {"key": "level", "path": "level"}]}},
            {"name": "pw", "secret": {"secretName": "db", "defaultMode": 0o400}},
            {"name": "me", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": tmp.path().join("made").to_str().unwrap(), "type": "DirectoryOrCreate"}}]}));
    let dirs = set_up(&roots, &p, &sources(), &ctx()).unwrap();
    let conf = &dirs["conf"];
    assert_eq!(read(conf, "sub/mode"), "fast");
    assert_eq!(std::fs::metadata(conf.join("sub/mode")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_link(conf.join("level")).unwrap(), Path::new("..data/level"));
    let pw = &dirs["pw"];
    assert!(pw.starts_with(tmp.path().join("mem")), "secrets on the memory root: {}", pw.display());
    assert_eq!(read(pw, "password"), "s3cret");
    assert_eq!(std::fs::metadata(pw.join("password")).unwrap().permissions().mode() & 0o777, 0o400);
    assert_eq!(read(&dirs["me"], "labels"), "app=\"web\"\n");
    assert_eq!(std::fs::metadata(&dirs["scratch"]).unwrap().permissions().mode() & 0o777, 0o777);
    assert!(tmp.path().join("made").is_dir());
    let m = mounts(&p.spec.containers[0], &dirs).unwrap();
    assert_eq!(m[0], Mount { host_path: conf.clone(), container_path: "/etc/conf".into(), read_only: false });
    assert!(m[1].host_path.ends_with("level") && !m[1].host_path.starts_with(conf.join("..data")), "subPath resolved to the file of now");
    // an unchanged source writes nothing; a changed one swaps `..data` and drops a removed key
    let before = std::fs::read_link(conf.join("..data")).unwrap();
    set_up(&roots, &p, &sources(), &ctx()).unwrap();
    assert_eq!(std::fs::read_link(conf.join("..data")).unwrap(), before);
    let mut changed = sources();
    let settings = SourceKey { secret: false, namespace: "shop".into(), name: "settings".into() };
    changed.insert(settings.clone(), Some(BTreeMap::from([("mode".to_string(), b"slow".to_vec()), ("level".to_string(), b"4".to_vec())])));
    set_up(&roots, &p, &changed, &ctx()).unwrap();
    assert_ne!(std::fs::read_link(conf.join("..data")).unwrap(), before);
    assert_eq!((read(conf, "sub/mode").as_str(), read(conf, "level").as_str()), ("slow", "4"));
    assert!(!conf.join(&before).exists(), "the old payload is gone");
    assert!(!m[1].host_path.exists(), "a subPath mount was bound to the file of then (its bind keeps that file), not through ..data");
    roots.remove_pod("u-1");
    assert!(roots.pods().is_empty());
}

#[test]
fn a_missing_source_an_unsupported_type_and_escaping_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = VolumeRoots { disk: tmp.path().join("disk"), memory: tmp.path().join("mem"), sized_tmpfs: false };
    let set_up_with = |volumes: serde_json::Value| set_up(&roots, &pod(json!({"containers": [], "volumes": volumes})), &sources(), &ctx());
    let e = set_up_with(json!([{"name": "v", "configMap": {"name": "gone"}}])).unwrap_err();
    assert_eq!(e, "MountVolume.SetUp failed for volume \"v\" : configmap \"gone\" not found");
    assert!(set_up_with(json!([{"name": "v", "configMap": {"name": "gone", "optional": true}}])).is_ok());
    let e = set_up_with(json!([{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}])).unwrap_err();
    assert!(e.contains("unsupported volume type") && e.contains("persistentVolumeClaim"), "{e}");
    let e = set_up_with(json!([{"name": "v", "configMap": {"name": "settings", "items": [{"key": "mode", "path": "../x"}]}}])).unwrap_err();
    assert!(e.contains("may not contain '..'"), "{e}");
    let e = set_up_with(json!([{"name": "v", "hostPath": {"path": tmp.path().join("none").to_str().unwrap(), "type": "Directory"}}])).unwrap_err();
    assert!(e.contains("is not a directory"), "{e}");
    let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": "../../etc"}]})).unwrap();
    assert!(mounts(&c, &HashMap::from([("v".to_string(), tmp.path().to_path_buf())])).unwrap_err().contains(".."));
}

#[test]
fn an_empty_dir_over_its_size_limit_is_named_in_kubelets_words() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = VolumeRoots { disk: tmp.path().join("disk"), memory: tmp.path().join("mem"), sized_tmpfs: false };
    let p = pod(json!({"containers": [{"name": "app", "image": "i"}],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Ki"}}, {"name": "free", "emptyDir": {}}]}));
    let dirs = set_up(&roots, &p, &sources(), &ctx()).unwrap();
    std::fs::write(dirs["free"].join("big"), vec![1u8; 1 << 20]).unwrap();
    std::fs::write(dirs["scratch"].join("small"), vec![1u8; 16 << 10]).unwrap();
    assert_eq!(over_size_limit(&roots, &p), None);
    std::fs::create_dir(dirs["scratch"].join("sub")).unwrap();
    std::fs::write(dirs["scratch"].join("sub/big"), vec![1u8; 128 << 10]).unwrap();
    assert_eq!(over_size_limit(&roots, &p).as_deref(), Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"64Ki\". "));
}
