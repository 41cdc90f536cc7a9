//! `hack/bench-scale.sh` refuses a binary it cannot run before it starts any server.

use std::process::Command;

#[test]
fn bench_scale_names_the_binary_it_cannot_run_and_exits_2() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/hack/bench-scale.sh"))
        .env("OPERATOR", "/nonexistent/sandboxed-containers-operator")
        .env("FAKE_APISERVER", "/nonexistent/fake-apiserver")
        .env_remove("KUBEBUILDER_ASSETS")
        .output()
        .expect("run bash");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not an executable: /nonexistent/sandboxed-containers-operator"),
        "{stderr}"
    );
}
