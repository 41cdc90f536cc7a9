//! The envtest-convention real API server tier: etcd + kube-apiserver from `KUBEBUILDER_ASSETS`.
//!
//! `start()` returns `None` (and prints one line saying how to enable it) when the binaries are
//! not available, so tests written against it skip cleanly on machines without them. When they
//! are available the tier is wanted, so a failure to start is a test failure with the reason.
//!
//! The server listens on loopback only, serves a certificate from a throwaway CA, authenticates
//! one admin token (group `system:masters`) from a static token file and authorizes with RBAC.
//! The MachineConfig, MachineConfigPool and ContainerRuntimeConfig CRDs (the real OpenShift
//! ones from ../shared/crds) and our KataConfig CRD are installed and established.
//! [`EnvTest::restart_apiserver`] kills kube-apiserver and starts it again on the same port (etcd
//! keeps the data), for tests of riding out a control-plane restart.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub const SKIP_MESSAGE: &str = "envtest tier skipped: set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd (Debian package etcd-server provides etcd)";

/// The admin bearer token of the static token file.
pub const ADMIN_TOKEN: &str = "envtest-admin-token";

/// Upper bound on waiting for the server and CRDs: a hang guard, not a timing expectation.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running etcd + kube-apiserver pair; both processes are killed when this is dropped.
pub struct EnvTest {
    /// Admin client (token + the test CA).
    pub client: kube::Client,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    pub token: String,
    /// Where data, certificates and the two processes' logs live.
    pub dir: PathBuf,
    etcd: Child,
    apiserver: Child,
    /// How the API server was started, so [`EnvTest::restart_apiserver`] can start it again.
    apiserver_bin: PathBuf,
    apiserver_args: Vec<String>,
    /// kube-controller-manager, when the assets folder has it (garbage collection, namespace
    /// deletion, ServiceAccount token Secrets).
    controller_manager: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl Drop for EnvTest {
    fn drop(&mut self) {
        if let Some(cm) = self.controller_manager.as_mut() {
            let _ = cm.kill();
            let _ = cm.wait();
        }
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Which platform APIs the API server serves besides Kubernetes' own and the KataConfig CRD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// OpenShift: the Machine Config Operator's CRDs are installed.
    OpenShift,
    /// Vanilla Kubernetes: no `machineconfiguration.openshift.io`.
    Vanilla,
}

/// Start the tier from `KUBEBUILDER_ASSETS`, or print [`SKIP_MESSAGE`] and return `None`.
pub async fn start() -> Option<EnvTest> {
    start_on(Platform::OpenShift).await
}

/// [`start`] for the given platform.
pub async fn start_on(platform: Platform) -> Option<EnvTest> {
    let assets = match locate_assets(std::env::var_os("KUBEBUILDER_ASSETS").as_deref()) {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("{why}");
            return None;
        }
    };
    match start_with_assets_on(&assets, platform).await {
        Ok(env) => Some(env),
        Err(e) => panic!(
            "envtest: KUBEBUILDER_ASSETS={} is set but the API server did not start: {e:#}",
            assets.display()
        ),
    }
}

/// The assets folder if it holds both binaries; otherwise the one-line skip message.
pub fn locate_assets(value: Option<&OsStr>) -> Result<PathBuf, String> {
    let Some(dir) = value.filter(|v| !v.is_empty()) else {
        return Err(SKIP_MESSAGE.to_string());
    };
    let dir = PathBuf::from(dir);
    let missing: Vec<&str> = ["kube-apiserver", "etcd"]
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(format!(
            "{SKIP_MESSAGE} ({} has no {})",
            dir.display(),
            missing.join(" and no ")
        ))
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Bind-then-release: the small window before the child binds is acceptable for tests.
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Serving certificate for 127.0.0.1/localhost and the first service IP, from a fresh CA.
fn certificates(dir: &Path) -> anyhow::Result<String> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "envtest-ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "10.0.0.1".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &issuer)?;
    fs::write(dir.join("apiserver.crt"), cert.pem())?;
    fs::write(dir.join("apiserver.key"), key.serialize_pem())?;
    fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    // Service-account token signing key (ECDSA P-256, PKCS#8) and its public half (SPKI), which
    // --service-account-key-file parses reliably.
    let sa = KeyPair::generate()?;
    fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
    Ok(ca_cert.pem())
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    // Appends, so a restarted process's output follows its predecessor's.
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Fail if either process has already exited.
fn check_alive(children: &mut [(&str, &mut Child, &Path)]) -> anyhow::Result<()> {
    for (name, child, log) in children.iter_mut() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited before the API server was ready ({status}); last output: {}",
                log_tail(log)
            );
        }
    }
    Ok(())
}

/// Start etcd and kube-apiserver from `assets`, wait for readiness and install the CRDs.
pub async fn start_with_assets(assets: &Path) -> anyhow::Result<EnvTest> {
    start_with_assets_on(assets, Platform::OpenShift).await
}

/// [`start_with_assets`] for the given platform.
pub async fn start_with_assets_on(assets: &Path, platform: Platform) -> anyhow::Result<EnvTest> {
    let tmp = tempfile::Builder::new().prefix("envtest-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    let ca_pem = certificates(&dir)?;
    fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},envtest-admin,envtest-admin,\"system:masters\"\n"),
    )?;
    let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
    let etcd_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let d = |f: &str| dir.join(f).display().to_string();
    let etcd_args: Vec<String> = vec![
        format!("--data-dir={}", d("etcd")),
        "--name=envtest".into(),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=envtest={peer_url}"),
    ];
    let url = format!("https://127.0.0.1:{secure_port}");
    let apiserver_args: Vec<String> = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={secure_port}"),
        format!("--cert-dir={}", d("certs")),
        format!("--tls-cert-file={}", d("apiserver.crt")),
        format!("--tls-private-key-file={}", d("apiserver.key")),
        format!("--token-auth-file={}", d("tokens.csv")),
        "--authorization-mode=RBAC".into(),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        format!("--service-account-issuer={url}"),
        format!("--service-account-key-file={}", d("sa.pub")),
        format!("--service-account-signing-key-file={}", d("sa.key")),
        "--disable-admission-plugins=ServiceAccount".into(),
        // On by default in OpenShift: blockOwnerDeletion needs `update` on the owner's finalizers.
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
        "--allow-privileged=true".into(),
    ];
    let (etcd_log, api_log) = (dir.join("etcd.log"), dir.join("kube-apiserver.log"));
    let client = client_for(&url, &ca_pem, ADMIN_TOKEN).await?;
    let mut etcd = spawn(&assets.join("etcd"), &etcd_args, &etcd_log)?;
    let apiserver_bin = assets.join("kube-apiserver");
    let apiserver = match spawn(&apiserver_bin, &apiserver_args, &api_log) {
        Ok(c) => c,
        Err(e) => {
            let _ = etcd.kill();
            let _ = etcd.wait();
            return Err(e);
        }
    };
    // From here on the handle owns the processes, so every early return kills them.
    let mut env = EnvTest {
        client,
        url,
        ca_pem,
        token: ADMIN_TOKEN.to_string(),
        dir,
        etcd,
        apiserver,
        apiserver_bin,
        apiserver_args,
        controller_manager: None,
        _tmp: tmp,
    };
    env.wait_ready(&etcd_log, &api_log).await?;
    env.install_crds(platform).await?;
    let manager = assets.join("kube-controller-manager");
    if manager.is_file() {
        env.start_controller_manager(&manager)?;
    }
    Ok(env)
}

/// A client for `url` trusting `ca_pem` and sending `token`.
pub async fn client_for(url: &str, ca_pem: &str, token: &str) -> anyhow::Result<kube::Client> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = Kubeconfig::from_yaml(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: envtest\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: envtest\ncurrent-context: envtest\n"
    ))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

impl EnvTest {
    /// A client authenticated as the operator's ServiceAccount in `namespace` (a real token from
    /// the TokenRequest API), bound to the operator's generated RBAC, which this applies first.
    pub async fn operator_client(&self, namespace: &str) -> anyhow::Result<kube::Client> {
        use sandboxed_containers_operator::packaging::{OPERATOR_NAME, manifests};
        self.service_account_client(
            namespace,
            OPERATOR_NAME,
            manifests::operator_rbac(namespace)?,
        )
        .await
    }

    /// A client with a real token of ServiceAccount `namespace/name`, after applying `rbac`
    /// (Role, ClusterRole and binding objects as JSON) as the administrator.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
        rbac: Vec<serde_json::Value>,
    ) -> anyhow::Result<kube::Client> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        self.apply_json(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
            .await?;
        self.apply_json(serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}))
            .await?;
        for obj in rbac {
            self.apply_json(obj).await?;
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("request a token for ServiceAccount {namespace}/{name}"))?
            .status
            .map(|s| s.token)
            .context("the TokenRequest has no token")?;
        client_for(&self.url, &self.ca_pem, &token).await
    }

    /// Server-side applies one object given as JSON (any kind the server serves) as the
    /// administrator; the plural is found through discovery.
    pub async fn apply_json(&self, obj: serde_json::Value) -> anyhow::Result<DynamicObject> {
        let obj: DynamicObject = serde_json::from_value(obj)?;
        let types = obj.types.clone().unwrap_or_default();
        let gvk = GroupVersionKind::try_from(&types)?;
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .with_context(|| format!("discover {}", gvk.kind))?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = match (&obj.metadata.namespace, caps.scope) {
            (Some(ns), kube::discovery::Scope::Namespaced) => {
                Api::namespaced_with(self.client.clone(), ns, &ar)
            }
            _ => Api::all_with(self.client.clone(), &ar),
        };
        api.patch(
            &name,
            &PatchParams::apply("envtest").force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("apply {} {name}", gvk.kind))
    }

    /// Kills kube-apiserver (SIGKILL: a crash, every connection reset), keeps it down for
    /// `down_for`, starts it again on the same port with the same flags and waits until it is
    /// ready. etcd keeps the data, so clients find every object again; their watches must
    /// reconnect.
    pub async fn restart_apiserver(&mut self, down_for: Duration) -> anyhow::Result<()> {
        let _ = self.apiserver.kill();
        self.apiserver
            .wait()
            .context("wait for the killed kube-apiserver")?;
        tokio::time::sleep(down_for).await;
        let api_log = self.dir.join("kube-apiserver.log");
        self.apiserver = spawn(&self.apiserver_bin, &self.apiserver_args, &api_log)?;
        let etcd_log = self.dir.join("etcd.log");
        self.wait_ready(&etcd_log, &api_log)
            .await
            .context("kube-apiserver after its restart")
    }

    /// Whether kube-controller-manager runs beside the API server.
    pub fn has_controller_manager(&self) -> bool {
        self.controller_manager.is_some()
    }

    fn start_controller_manager(&mut self, bin: &Path) -> anyhow::Result<()> {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let kubeconfig = self.dir.join("controller-manager.kubeconfig");
        fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\ncurrent-context: envtest\n",
                self.url, self.token
            ),
        )?;
        let d = |f: &str| self.dir.join(f).display().to_string();
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--service-account-private-key-file={}", d("sa.key")),
            format!("--root-ca-file={}", d("ca.crt")),
            "--use-service-account-credentials=false".into(),
            "--controllers=*".into(),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
        ];
        let log = self.dir.join("kube-controller-manager.log");
        self.controller_manager = Some(spawn(bin, &args, &log)?);
        Ok(())
    }

    async fn wait_ready(&mut self, etcd_log: &Path, api_log: &Path) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            check_alive(&mut [
                ("etcd", &mut self.etcd, etcd_log),
                ("kube-apiserver", &mut self.apiserver, api_log),
            ])?;
            let req = http::Request::get("/readyz").body(Vec::new())?;
            match self.client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                last => {
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "kube-apiserver not ready after {READY_TIMEOUT:?} (last answer: {last:?}); last output: {}",
                            log_tail(api_log)
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The OpenShift CRDs this operator works with, plus ours.
    pub fn crds() -> anyhow::Result<Vec<CustomResourceDefinition>> {
        Self::crds_for(Platform::OpenShift)
    }

    /// The CRDs a `platform` serves that this operator works with, plus ours.
    pub fn crds_for(platform: Platform) -> anyhow::Result<Vec<CustomResourceDefinition>> {
        if platform == Platform::Vanilla {
            return Ok(vec![sandboxed_containers_operator::crdgen::kataconfig_crd()]);
        }
        // `../shared/crds` from the crate; ancestors further up too, so git worktrees find it.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shared = manifest
            .ancestors()
            .skip(1)
            .map(|a| a.join("shared/crds"))
            .find(|p| p.is_dir())
            .with_context(|| format!("no shared/crds folder above {}", manifest.display()))?;
        let mut crds = Vec::new();
        for file in [
            "0000_80_machine-config_01_machineconfigs.crd.yaml",
            "0000_80_machine-config_01_machineconfigpools.crd.yaml",
            "0000_80_machine-config_01_containerruntimeconfigs-Default.crd.yaml",
        ] {
            let path = shared.join(file);
            let text = fs::read_to_string(&path)
                .with_context(|| format!("read CRD {}", path.display()))?;
            crds.push(
                serde_yaml::from_str(&text)
                    .with_context(|| format!("parse CRD {}", path.display()))?,
            );
        }
        crds.push(sandboxed_containers_operator::crdgen::kataconfig_crd());
        Ok(crds)
    }

    async fn install_crds(&self, platform: Platform) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crds = Self::crds_for(platform)?;
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let mut crd = crd.clone();
            crd.metadata.managed_fields = None;
            api.patch(
                &name,
                &PatchParams::apply("envtest").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("install CRD {name}"))?;
        }
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let version = crd
                .spec
                .versions
                .first()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let gvk = GroupVersionKind::gvk(&crd.spec.group, &version, &crd.spec.names.kind);
            let resource = Api::<DynamicObject>::all_with(
                self.client.clone(),
                &ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural),
            );
            loop {
                let established = api
                    .get(&name)
                    .await?
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                // Established can precede discovery by a moment: also wait until it is served.
                if established && resource.list(&ListParams::default().limit(1)).await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("CRD {name} not established after {READY_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}
