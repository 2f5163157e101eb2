//! TLS with a private CA: a private `redis-server` whose certificate a test CA signed (made
//! with `openssl`, which must be on the PATH). Clients that trust the CA file connect without
//! `#insecure`; clients that don't fail with one clear line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use eventbus_core::TransportErrorKind;
use eventbus_redis::{Error, RedisConfig, RedisTransport};
use support::server::{free_port, PrivateServer, TempDir};
use support::BIN;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the TLS tests make their certificates with `openssl`, which must be on the PATH");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A private CA, a server certificate it signed for 127.0.0.1, and a TLS-only server.
struct TlsServer {
    server: PrivateServer,
    tls_port: u16,
    certs: TempDir,
}

impl TlsServer {
    fn start() -> Self {
        let certs = TempDir::new("tls");
        let dir = certs.path();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=eventbus cli test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        let (port, tls_port) = (free_port(), free_port());
        let file = |name: &str| dir.join(name).display().to_string();
        let server = PrivateServer::start_program(
            eventbus_tests::binaries::tls_server(),
            port,
            &[
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &file("server.crt"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.crt"),
                "--tls-auth-clients",
                "no",
            ],
            tls_port,
        );
        TlsServer {
            server,
            tls_port,
            certs,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    fn ca(&self) -> PathBuf {
        self.certs.path().join("ca.crt")
    }

    /// The CLI against the TLS port, with no CA variable inherited.
    fn cli(&self, env: &[(&str, &Path)], args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.env("REDIS_URL", self.url())
            .env_remove("SSL_CERT_FILE")
            .env_remove("REDIS_TLS_CA_FILE")
            .args(["--namespace", "clitls"]);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.args(args).output().unwrap()
    }
}

fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eventbus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_cli_trusts_a_private_ca_from_a_flag_or_the_environment() {
    let tls = TlsServer::start();
    let ca = tls.ca();
    let ca_arg = ca.display().to_string();

    let id = success(&tls.cli(
        &[],
        &["--tls-ca-file", &ca_arg, "publish", "Secure", r#"{"n":1}"#],
    ));
    assert!(id.trim().contains('-'), "{id}");
    success(&tls.cli(
        &[("SSL_CERT_FILE", &ca)],
        &["publish", "Secure", r#"{"n":2}"#],
    ));
    let tailed = success(&tls.cli(
        &[("REDIS_TLS_CA_FILE", &ca)],
        &["tail", "Secure", "--from-beginning", "--count", "2"],
    ));
    assert_eq!(tailed.lines().count(), 2, "{tailed}");

    // Without the CA: one clear line.
    let out = tls.cli(&[], &["lag"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&tls.url()), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");

    // A CA file for a plain URL, or a file that is no certificate, is a clear error too.
    let plain = format!("redis://127.0.0.1:{}", tls.server.port);
    let out = Command::new(BIN)
        .args(["--url", &plain, "--tls-ca-file", &ca_arg, "lag"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success() && stderr.contains("rediss://"),
        "{stderr}"
    );
    let key = tls.certs.path().join("server.csr").display().to_string();
    let out = tls.cli(&[], &["--tls-ca-file", &key, "lag"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success() && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_trusts_a_private_ca_file() {
    let tls = tokio::task::spawn_blocking(TlsServer::start).await.unwrap();
    let config = RedisConfig::new(&tls.url())
        .unwrap()
        .namespace("clitls")
        .tls_ca_file(tls.ca())
        .unwrap();
    assert_eq!(config.tls_ca_path(), Some(tls.ca().as_path()));
    let transport = RedisTransport::connect(config)
        .await
        .unwrap_or_else(|e| panic!("TLS with the private CA: {e}"));
    assert!(!transport.server_version().is_empty());

    match RedisTransport::connect(RedisConfig::new(&tls.url()).unwrap()).await {
        Err(Error::Transport(e)) => {
            assert_eq!(e.kind(), TransportErrorKind::Connection, "{e}");
            assert!(e.to_string().contains("certificate"), "{e}");
        }
        other => panic!("connected without trusting the CA: {other:?}"),
    }
}
