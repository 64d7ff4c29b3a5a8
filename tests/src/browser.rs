//! A real headless Chromium (Debian's `/usr/bin/chromium`, installed by
//! `scripts/deps`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: the browser reads commands on its fd 3 and
//! writes answers and events on its fd 4, each a JSON object ended by a
//! NUL byte). No WebDriver server and no client crate: a few commands are
//! all the dashboard's tests need.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one command may take to be answered.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium of its own (own profile), ended when dropped.
pub struct Browser {
    child: Child,
    commands: Mutex<std::fs::File>,
    messages: Mutex<Receiver<Value>>,
    next_id: Mutex<u64>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium; panics when it is missing (the tests need it).
    pub fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: scripts/deps installs Debian's chromium"
        );
        let profile = tempfile::tempdir().expect("a profile dir");
        // Close-on-exec: no other child of the test inherits them, which
        // would keep the pipes open after Chromium is gone.
        // Above 4, so that moving one onto fd 3 or 4 never overwrites the other.
        let high = |fd: OwnedFd| -> OwnedFd {
            let raised = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                .expect("a descriptor above 4");
            // SAFETY: fcntl(2) just returned this descriptor, owned by nobody else.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raised) }
        };
        let pipe = || {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("a pipe");
            (high(read), high(write))
        };
        let (to_browser_read, to_browser_write) = pipe();
        let (from_browser_read, from_browser_write) = pipe();
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(profile.path().join("chromium.log")).expect("a log file"));
        // Chromium refuses to run as root with its sandbox on, and tests
        // here run as root (CI too): the pages it opens are the test's own.
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--no-sandbox");
        }
        let (child_in, child_out) = (to_browser_read.as_raw_fd(), from_browser_write.as_raw_fd());
        // SAFETY: between fork and exec only dup2(2), async-signal-safe; the
        // copies on fds 3 and 4 do not close on exec.
        unsafe {
            cmd.pre_exec(move || {
                for (from, to) in [(child_in, 3), (child_out, 4)] {
                    if nix::libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium starts");
        drop((to_browser_read, from_browser_write));
        let (tx, messages) = std::sync::mpsc::channel();
        let from: OwnedFd = from_browser_read;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(from));
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(msg) = serde_json::from_slice(&buf) {
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        Self {
            child,
            commands: Mutex::new(std::fs::File::from(to_browser_write)),
            messages: Mutex::new(messages),
            next_id: Mutex::new(0),
            profile,
        }
    }

    /// Sends `method` (to the page of `session`, if given) and waits for
    /// its answer; events that come meanwhile are dropped.
    ///
    /// # Panics
    /// On an error answer or none within 30 s.
    pub fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            msg["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands
            .lock()
            .unwrap()
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium does not read its pipe ({e}): {}", self.log()));
        let messages = self.messages.lock().unwrap();
        let deadline = Instant::now() + ANSWER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match messages.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    if let Some(error) = answer.get("error") {
                        panic!("{method} failed: {error}");
                    }
                    return answer["result"].clone();
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no answer to {method} in {ANSWER_WAIT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium went away during {method}: {}", self.log())
                }
            }
        }
    }

    /// The end of Chromium's own log, for a failure.
    fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A new tab.
    pub fn page(&self) -> Page<'_> {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let page = Page {
            browser: self,
            session: attached["sessionId"].as_str().expect("a session").into(),
        };
        page.call("Page.enable", json!({}));
        page.call("Runtime.enable", json!({}));
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params)
    }

    /// Goes to `url` and waits until the page (after redirects) has loaded.
    pub fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            &format!("{url} loaded"),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        );
    }

    /// The value of `expression` (a promise is awaited).
    ///
    /// # Panics
    /// When it throws.
    pub fn eval(&self, expression: &str) -> Value {
        let out = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = out.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        out["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page; its value.
    pub fn wait_for(&self, what: &str, expression: &str) -> Value {
        let truthy = |v: &Value| !matches!(v, Value::Null | Value::Bool(false)) && *v != json!("");
        crate::eventually(what, Duration::from_secs(20), || {
            let v = self.eval(expression);
            truthy(&v).then_some(v)
        })
    }

    /// Types `text` as key presses into the focused element (`\r` is Enter).
    pub fn type_text(&self, text: &str) {
        for c in text.chars() {
            let (key, text, code) = match c {
                '\r' => ("Enter".to_string(), "\r".to_string(), 13),
                c => (c.to_string(), c.to_string(), 0),
            };
            let mut down = json!({ "type": "keyDown", "key": key, "text": text });
            if code != 0 {
                down["windowsVirtualKeyCode"] = code.into();
                down["code"] = key.clone().into();
            }
            self.call("Input.dispatchKeyEvent", down);
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": "keyUp", "key": key }),
            );
        }
    }

    /// Emulates the system's dark (or light) theme.
    pub fn dark(&self, on: bool) {
        let scheme = if on { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
    }

    /// A PNG of the whole page to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        std::fs::write(path, png).expect("the screenshot is written");
    }
}
