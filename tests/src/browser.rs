//! A real browser for the web UI's tests: Debian's `chromium`, headless,
//! driven through `chromedriver` (WebDriver) with `fantoccini`.
//!
//! [`Browser::start`] answers `None`, saying why, where chromium or
//! chromedriver is missing (`.ci/run` installs both): the UI tests skip.
//! The API is blocking, like the rest of the harness: each call runs on
//! the browser's own runtime. Dropping it closes the session and kills
//! chromedriver's whole process group, so no chromium outlives a test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A headless chromium under chromedriver.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Console messages already returned by [`Browser::console_errors`].
    seen_errors: Vec<String>,
}

/// Where screenshots go: `target/ui-screenshots/`, for a person to look at.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-screenshots")
}

/// chromedriver's log of the browser (`goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session
    /// (1400×1000). `None` (printed) where either is not installed.
    pub fn start() -> anyhow::Result<Option<Browser>> {
        let (Some(chromium), Some(driver)) = (
            find_program(&["chromium", "chromium-browser", "google-chrome"]),
            find_program(&["chromedriver"]),
        ) else {
            eprintln!(
                "skipped: the web UI tests need chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
            );
            return Ok(None);
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let profile = tempfile::Builder::new()
            .prefix("shoal-test-chromium-")
            .tempdir()?;
        let mut cmd = Command::new(&driver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let driver_child = cmd
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut browser = Browser {
            rt,
            client: None,
            driver: driver_child,
            _profile: profile,
            seen_errors: Vec::new(),
        };
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let attempt = browser.rt.block_on(async {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
            });
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = browser.driver.try_wait() {
                        bail!("chromedriver exited ({status}) before a session started: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => bail!("no chromium session within 60 s: {e}"),
            }
        };
        browser.client = Some(client);
        Ok(Some(browser))
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        let c = self.c().clone();
        self.rt.block_on(async move { c.goto(url).await })?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and
    /// returns its value.
    pub fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        let c = self.c().clone();
        Ok(self
            .rt
            .block_on(async move { c.execute(script, args).await })?)
    }

    /// The text of the first element matching `css` ("" when none).
    pub fn text(&self, css: &str) -> anyhow::Result<String> {
        let v = self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        )?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the first element matching `css` has text containing
    /// `needle`; returns that text.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text(css)?;
            if t.contains(needle) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                bail!("{css} never showed {needle:?} within {timeout:?}; it shows:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `script` (a function body) returns true.
    pub fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(script, vec![])? == json!(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what}: not within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let c = self.c().clone();
        self.rt
            .block_on(async move { c.find(Locator::Css(css)).await?.click().await })?;
        Ok(())
    }

    /// Types `keys` into the element matching `css` (WebDriver key codes
    /// such as `\u{E007}`, Enter, work).
    pub fn type_into(&self, css: &str, keys: &str) -> anyhow::Result<()> {
        let c = self.c().clone();
        self.rt
            .block_on(async move { c.find(Locator::Css(css)).await?.send_keys(keys).await })?;
        Ok(())
    }

    /// Sends `keys` to whatever has the focus (keyboard-only use).
    pub fn keys(&self, keys: &str) -> anyhow::Result<()> {
        let c = self.c().clone();
        self.rt
            .block_on(async move { c.active_element().await?.send_keys(keys).await })?;
        Ok(())
    }

    /// Drags the element matching `from` onto the element matching `to`
    /// with a mouse (pointer events), in steps, as a person would.
    pub fn drag(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let c = self.c().clone();
        self.rt.block_on(async move {
            let a = c.find(Locator::Css(from)).await?;
            let b = c.find(Locator::Css(to)).await?;
            let mouse = MouseActions::new("mouse".into())
                .then(PointerAction::MoveToElement {
                    element: a,
                    duration: None,
                    x: 0.0,
                    y: 0.0,
                })
                .then(PointerAction::Down {
                    button: fantoccini::actions::MOUSE_BUTTON_LEFT,
                })
                .then(PointerAction::MoveBy {
                    duration: Some(Duration::from_millis(100)),
                    x: 20.0,
                    y: 20.0,
                })
                .then(PointerAction::MoveToElement {
                    element: b.clone(),
                    duration: Some(Duration::from_millis(300)),
                    x: 0.0,
                    y: 0.0,
                })
                .then(PointerAction::MoveToElement {
                    element: b,
                    duration: Some(Duration::from_millis(50)),
                    x: 5.0,
                    y: 0.0,
                })
                .then(PointerAction::Up {
                    button: fantoccini::actions::MOUSE_BUTTON_LEFT,
                });
            c.perform_actions(mouse).await
        })?;
        Ok(())
    }

    /// Saves a screenshot as `target/ui-screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let c = self.c().clone();
        let png = self.rt.block_on(async move { c.screenshot().await })?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// JavaScript errors and `console.error`s since the last call (network
    /// failures, the API's own 4xx answers that tests provoke, are not
    /// JavaScript errors and are left out).
    pub fn console_errors(&mut self) -> anyhow::Result<Vec<String>> {
        let c = self.c().clone();
        let log = self
            .rt
            .block_on(async move { c.issue_cmd(BrowserLog).await })?;
        let mut out = Vec::new();
        for e in log.as_array().into_iter().flatten() {
            let level = e["level"].as_str().unwrap_or_default();
            let source = e["source"].as_str().unwrap_or_default();
            let message = e["message"].as_str().unwrap_or_default().to_owned();
            if level == "SEVERE" && source != "network" && !self.seen_errors.contains(&message) {
                self.seen_errors.push(message.clone());
                out.push(message);
            }
        }
        Ok(out)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(10), c.close()).await
            });
        }
        // chromedriver and every chromium process it started.
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
