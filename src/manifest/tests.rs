use super::*;

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 25%}
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: clusterctl/busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
          env:
            - {name: GREETING, value: "hello"}
          ports:
            - {containerPort: 8080, name: http, protocol: TCP}
          resources:
            requests: {cpu: 100m, memory: 32Mi}
            limits: {cpu: 1, memory: 64Mi}
          readinessProbe:
            httpGet: {path: /, port: http}
            periodSeconds: 2
          livenessProbe:
            tcpSocket: {port: 8080}
            initialDelaySeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
    - port: 80
      targetPort: http
      nodePort: 30080
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: fast}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
"#;

#[test]
fn an_ordinary_deployment_and_service_manifest_is_accepted_as_written() {
    let docs = parse("web.yaml", WEB).unwrap();
    assert_eq!(docs.len(), 4);
    let Object::Deployment(d) = &docs[0].object else { panic!("not a deployment") };
    assert_eq!(d.spec.replicas(), 3);
    assert_eq!(d.spec.template.spec.containers[0].resources.requests["memory"].bytes().unwrap(), 32 << 20);
    assert_eq!(docs[0].object.display_name(), "deployment.apps/web");
    assert_eq!(docs[1].object.display_name(), "service/web");
    assert_eq!(docs[1].object.to_value()["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(docs[3].object.to_value()["kind"], "Namespace");
}

#[test]
fn every_document_is_checked_and_every_error_reported() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {}\n";
    let errors = parse("two.yaml", text).unwrap_err();
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines, [
        "two.yaml: document 1 (Pod a): spec.containers[0].image: Required value",
        "two.yaml: document 2 (Service b): spec.ports: Required value: at least one port",
    ]);
}

#[test]
fn empty_documents_are_skipped_but_an_empty_manifest_is_refused() {
    assert_eq!(parse("x.yaml", "---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n").unwrap().len(), 1);
    assert!(parse("x.yaml", "# nothing\n").unwrap_err().to_string().contains("holds no objects"));
}

/// Every file of `tests/manifest_corpus/` starts with `# expect: <text>`; loading it must fail with
/// an error containing that text.
#[test]
fn the_invalid_manifest_corpus_is_refused_with_the_field_path() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifest_corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| panic!("{} has no expect line", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match parse(&name, &text) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(expected), "{name}:\n  expected {expected:?}\n  got {message:?}");
                assert!(message.starts_with(&format!("{name}: document ")), "{name}: {message}");
            }
        }
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} corpus files");
}
