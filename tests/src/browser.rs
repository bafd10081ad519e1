//! A real browser for the portal's tests: Debian's headless Chromium driven
//! over WebDriver (`fantoccini`) through `chromedriver`, one driver process
//! per [`Browser`] on a free port, stopped by its PID when dropped. No
//! browser is downloaded: `scripts/test` installs `chromium` and
//! `chromium-driver` when they are missing, and the tests skip (with a
//! message) when they are not there.
//!
//! Waits are bounded and poll a condition (the driver's status, an element
//! appearing); nothing sleeps to synchronise.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser and its driver are installed.
pub fn available() -> bool {
    std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists()
}

/// axe-core's script, installed by `npm ci` in `tests/` (scripts/test).
pub fn axe_script() -> String {
    let p: PathBuf = crate::root().join("tests/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `npm ci` in tests/, as scripts/test does)",
            p.display()
        )
    })
}

/// A headless Chromium session and its chromedriver.
pub struct Browser {
    pub client: Client,
    _driver: crate::ChildGuard,
    /// Chromium's profile, removed at the end.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless session.
    pub async fn start() -> Browser {
        let port = crate::free_port();
        let driver = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let driver = crate::ChildGuard(driver);
        let url = format!("http://127.0.0.1:{port}");
        let ready = crate::eventually(Duration::from_secs(20), || {
            let status = format!("{url}/status");
            async move {
                match reqwest::get(&status).await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(ready, "chromedriver did not become ready on port {port}");
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1024",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        let client = builder
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}"));
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The element `css`, waited for 10 s at most.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Type `text` into the element `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        e.clear().await.ok();
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Click `css` (a button that submits a form) and wait, 10 s at most,
    /// until the next page has loaded: the old document is marked, and the
    /// wait is for a document without the mark, fully loaded.
    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.eval("window.__tollgateOld = true; return null").await;
        e.click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
        let loaded = crate::eventually(Duration::from_secs(10), || async {
            self.client
                .execute(
                    "return window.__tollgateOld !== true && document.readyState === 'complete'",
                    Vec::new(),
                )
                .await
                .is_ok_and(|v| v == Value::Bool(true))
        })
        .await;
        assert!(loaded, "clicking {css}: no new page within 10 s");
    }

    /// Click `css` in a page that answers in place (the admin console's
    /// script): no new page is awaited; the caller waits for what changes.
    pub async fn press(&self, css: &str) {
        let e = self.element(css).await;
        e.click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// The text of `css`.
    pub async fn text(&self, css: &str) -> String {
        self.element(css).await.text().await.unwrap()
    }

    /// Wait (10 s at most) until the element `css` contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) {
        let found = crate::eventually(std::time::Duration::from_secs(10), || async {
            self.eval(&format!(
                "const e = document.querySelector({css:?}); return e ? e.textContent : ''"
            ))
            .await
            .as_str()
            .is_some_and(|t| t.contains(text))
        })
        .await;
        assert!(
            found,
            "{css} never showed {text:?}: {}",
            self.body_text().await
        );
    }

    /// Sign in to the admin console at `console` (its URL) with an admin
    /// token; wait for the dashboard.
    pub async fn console_sign_in(&self, console: &str, token: &str) {
        self.goto(console).await;
        self.fill("#token", token).await;
        self.press("main form button[type=submit]").await;
        self.wait_text("#who", "(").await;
    }

    /// The whole page's visible text.
    pub async fn body_text(&self) -> String {
        self.text("body").await
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// A cookie's value, if the browser holds it.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_named_cookie(name)
            .await
            .ok()
            .map(|c| c.value().to_string())
    }

    /// Run script `js` in the page; its result.
    pub async fn eval(&self, js: &str) -> Value {
        self.client
            .execute(js, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Run axe-core in the page: the serious and critical violations.
    pub async fn axe(&self, axe: &str) -> Vec<Value> {
        // Injected as a script of the test (WebDriver's execute), not
        // through the page: the portal's CSP does not need to allow it.
        self.client
            .execute(axe, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("injecting axe-core: {e}"));
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.html)}))))
                    .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
                Vec::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("running axe-core: {e}"));
        result
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect()
    }

    /// Save a PNG of the viewport.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
