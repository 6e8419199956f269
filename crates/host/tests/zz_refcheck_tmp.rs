// TEMPORARY: side-by-side harness, removed after use.
use raworc_host::editor::Editor;
use raworc_host::exec::Environment;
use raworc_host::proto::EditRequest;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn subst(v: &Value, d: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("$D", d)),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), subst(x, d))).collect())
        }
        other => other.clone(),
    }
}

fn walk(dir: &std::path::Path, d: &str, files: &mut BTreeMap<String, String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, d, files);
            continue;
        }
        let key = p.display().to_string().replace(d, "$D");
        let val = match std::fs::read(&p) {
            Ok(b) => b.iter().map(|&c| c as char).collect(),
            Err(_) => "<err>".into(),
        };
        files.insert(key, val);
    }
}

#[tokio::test]
#[ignore]
async fn refcheck_dump() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string("/tmp/refcheck/cases.json").unwrap())
            .unwrap();
    let env = Environment::base(":0");
    let mut results = vec![];
    for case in cases {
        let dir = tempfile::Builder::new()
            .prefix("rscase.")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display().to_string();
        std::process::Command::new("bash")
            .arg("-c")
            .arg(case["setup"].as_str().unwrap())
            .current_dir(&d)
            .status()
            .unwrap();
        let editor = Editor::new();
        let mut outs = vec![];
        for call in case["calls"].as_array().unwrap() {
            let req = EditRequest {
                tool_name: case["tool"].as_str().unwrap().into(),
                undo: case["undo"].as_bool().unwrap(),
                max_characters: None,
                input: subst(call, &d),
            };
            let r = editor.run(&env, &req).await.unwrap();
            let out = json!({"output": r.output, "error": r.error, "system": r.system});
            let out: Value = serde_json::from_str(&out.to_string().replace(&d, "$D")).unwrap();
            let mut files = BTreeMap::new();
            walk(dir.path(), &d, &mut files);
            outs.push(json!({"result": out, "files": files}));
        }
        std::process::Command::new("chmod")
            .args(["-R", "u+rwx", &d])
            .status()
            .unwrap();
        results.push(json!({"name": case["name"], "calls": outs}));
    }
    std::fs::write(
        "/tmp/refcheck/rust_out.json",
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}

#[tokio::test]
#[ignore]
async fn refcheck_bash_dump() {
    use raworc_host::bash::Bash;
    use raworc_host::proto::BashRequest;
    let cases: Vec<(String, Vec<Value>)> =
        serde_json::from_str(&std::fs::read_to_string("/tmp/refcheck/bash_cases.json").unwrap())
            .unwrap();
    let env = Environment::base(":0");
    let mut results = vec![];
    for (name, calls) in cases {
        let bash = Bash::new("/tmp");
        let mut outs = vec![];
        for call in calls {
            if let Some(s) = call.get("sleep") {
                tokio::time::sleep(std::time::Duration::from_secs_f64(s.as_f64().unwrap())).await;
                continue;
            }
            let req: BashRequest = serde_json::from_value(call).unwrap();
            let r = bash
                .run(&env, &req, std::time::Duration::from_secs(2))
                .await
                .unwrap();
            outs.push(json!({"output": r.output, "error": r.error, "system": r.system}));
        }
        results.push(json!({"name": name, "calls": outs}));
    }
    std::fs::write(
        "/tmp/refcheck/rust_bash.json",
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}
