//! Debian's Chromium, headless, driven through `chromedriver` (started on a free port,
//! stopped by pid when the test ends, also when it fails) with fantoccini. Browser tests
//! run one at a time: two cores can't start several Chromiums at once quickly.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{json, Map};

use super::server::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time in this test binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a page gets to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// A `chromedriver` of this test, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "the console's browser tests need {binary}: apt-get install chromium chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            port,
            _profile: TempDir::new("chromium"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not open port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn session(&self) -> Client {
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1360,900",
            profile.as_str(),
        ];
        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a headless Chromium session")
    }
}

/// Runs `body` with a fresh headless Chromium; closes the session and stops chromedriver
/// afterwards, whether `body` passed or panicked.
pub async fn with_browser<F, Fut>(body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let _turn = ONE_AT_A_TIME.lock().await;
    let driver = Driver::start();
    let client = driver.session().await;
    let outcome = AssertUnwindSafe(body(client.clone())).catch_unwind().await;
    let _ = client.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The rendered text of the first element matching `css` once `ready` holds for it.
pub async fn wait_text(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if ready(&text) {
                    return text;
                }
                last = text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` did not show what was expected within {PATIENCE:?}; it shows:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the first element matching `css` (waiting for it).
pub async fn click(client: &Client, css: &str) {
    wait_text(client, css, |_| true).await;
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The texts of every element matching `css`.
pub async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.unwrap() {
        out.push(element.text().await.unwrap());
    }
    out
}

/// Writes a PNG of the page to `path`.
pub async fn screenshot(client: &Client, path: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(path, png).unwrap();
}

/// With `EVENTBUS_CONSOLE_SHOTS=DIR`, writes a PNG of the page to `DIR/{name}.png` (to look
/// at every page after a change).
pub async fn shot(client: &Client, name: &str) {
    if let Ok(dir) = std::env::var("EVENTBUS_CONSOLE_SHOTS") {
        screenshot(client, &format!("{dir}/{name}.png")).await;
    }
}
