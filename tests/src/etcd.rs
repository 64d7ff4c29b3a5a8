//! A real etcd for tests: free loopback ports, a temporary data dir, stopped
//! by its pid when dropped (also on panic). It can be killed with SIGKILL
//! and started again on the same ports and data, as after a crash.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Certificates for an etcd that serves TLS and asks clients for theirs.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct EtcdServer {
    child: Option<Child>,
    /// Where it runs: a test host of its own, or this machine's loopback.
    host: Option<crate::netns::Host>,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// Two ports that were free a moment ago.
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`etcd` is not on PATH: install Debian's etcd-server package (scripts/deps does)"
            )
        })
}

impl EtcdServer {
    /// Starts etcd and waits until it serves.
    pub fn start(tls: Option<ServerTls>) -> Self {
        Self::start_with(None, tls)
    }

    /// Starts etcd on a test host of its own, at its address, port 2379.
    pub fn start_on(host: &crate::netns::Host) -> Self {
        Self::start_with(Some(host.clone()), None)
    }

    fn start_with(host: Option<crate::netns::Host>, tls: Option<ServerTls>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir()
            .expect("temp dir");
        let (client_port, peer_port) = match host {
            Some(_) => (2379, 2380),
            None => free_ports(),
        };
        let mut server = Self {
            child: None,
            host,
            client_port,
            peer_port,
            tls,
            log: dir.path().join("etcd.log"),
            dir,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{}", self.ip(), self.client_port);
        let peer = format!("http://{}:{}", self.ip(), self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let mut cmd = match &self.host {
            Some(h) => h.command(etcd_binary()),
            None => Command::new(etcd_binary()),
        };
        cmd.args(["--name", "ao-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("ao-test={peer}")])
            .args([
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        self.wait_serving();
    }

    /// Waits until the client port accepts connections and etcd reports healthy.
    fn wait_serving(&mut self) {
        let serving = crate::poll(Duration::from_secs(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("etcd exited with {status}:\n{}", self.log_tail());
            }
            let up = if self.tls.is_some() {
                self.connect().is_ok()
            } else {
                self.http_get("/health").is_some_and(|b| b.contains("true"))
            };
            up.then_some(())
        });
        assert!(
            serving.is_some(),
            "etcd did not serve within 20 s:\n{}",
            self.log_tail()
        );
    }

    fn ip(&self) -> String {
        self.host
            .as_ref()
            .map_or_else(|| "127.0.0.1".into(), |h| h.ip.to_string())
    }

    /// `ip:port` of the client listener.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip(), self.client_port)
    }

    /// A TCP connection to the client port, from the host's namespace
    /// when it runs on a test host.
    fn connect(&self) -> std::io::Result<std::net::TcpStream> {
        let addr = self.addr();
        match &self.host {
            Some(h) => h
                .enter(|| std::net::TcpStream::connect(addr))
                .map_err(std::io::Error::other)?,
            None => std::net::TcpStream::connect(addr),
        }
    }

    /// The value for `--store`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.addr())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The body of a plain-HTTP GET on the client port (no TLS).
    pub fn http_get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = self.connect().ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }

    /// The store's current revision (one more per write transaction), read
    /// through etcd's JSON gateway.
    pub fn revision(&self) -> u64 {
        use std::io::{Read, Write};
        let body = r#"{"key":"AA==","count_only":true}"#;
        let mut s = self.connect().expect("etcd reachable");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /v3/kv/range HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let after = text
            .split("\"revision\":\"")
            .nth(1)
            .unwrap_or_else(|| panic!("no revision in {text}"));
        after.split('"').next().unwrap().parse().expect("revision")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
