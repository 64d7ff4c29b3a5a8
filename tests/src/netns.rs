//! Several test hosts on one machine: network namespaces with their own addresses on a private switch.
//!
//! A [`Net`] is a switch: a namespace `aot-<pid>-<k>-sw` holding a bridge
//! `br0`. Each [`Host`] is a namespace `aot-<pid>-<k>-<name>` whose `eth0`
//! is one end of a veth pair; the other end, `p<n>`, is a port of that
//! bridge. Both ends are created directly inside their namespaces, so the
//! machine's own namespace never sees any of these interfaces, and their
//! names only have to be unique within one `Net`. Namespace names carry the
//! pid and a per-process counter, so tests running in parallel (threads or
//! processes) never collide, and leftovers of a crashed run never block a
//! new one (`Net::new` deletes those whose pid is dead).
//!
//! [`Host::cut`] sets the host's bridge port to the `disabled` state: the
//! bridge drops every frame from and to that port, while the host's `eth0`
//! keeps its carrier, address and routes; nothing tells the host's sockets,
//! exactly like a switch port that dies. (`blocking` would not do: with STP
//! off the bridge puts a blocking port straight back to forwarding, as
//! seen on kernel 6.18; `disabled` ports are left alone.)

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context};

/// Prefix of every namespace this module makes.
const PREFIX: &str = "aot-";

/// Nets made by this process so far, for unique namespace names.
static NETS: AtomicU32 = AtomicU32::new(0);

/// An iproute2 tool (`ip`, `bridge`): its usual place, else whatever `PATH` finds.
fn tool(name: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| name.into())
}

/// Runs `program args…` (an iproute2 tool), returning its stdout; the error
/// names the command line.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let out = Command::new(tool(program))
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{line}` (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip args…`.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// The namespaces `ip netns list` shows.
fn netns_list() -> anyhow::Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Best effort: deletes `aot-<pid>-…` namespaces whose pid is dead (a
/// crashed run's leftovers). Host namespaces first, switches last. (The
/// pid is looked up in this process's pid namespace: runs sharing
/// `/run/netns` must share the pid namespace too.)
fn delete_stale() {
    let Ok(names) = netns_list() else { return };
    let dead = |name: &str| {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        pid.is_some_and(|pid| {
            pid != std::process::id() as i32
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
        })
    };
    let (switches, hosts): (Vec<_>, Vec<_>) = names
        .iter()
        .filter(|n| dead(n))
        .partition(|n| n.ends_with("-sw"));
    for name in hosts.into_iter().chain(switches) {
        let _ = ip(&["netns", "del", name]);
    }
}

/// A private network: a switch (a bridge inside its own namespace, so nothing touches the machine's real network) that hosts plug into. Dropping it removes every namespace and interface it made.
///
/// Dropping kills nothing: processes are the caller's. Stop every process
/// started with [`Host::command`] before dropping the `Net`; a process left
/// running keeps its (now unnamed) namespace alive, cut off from everything.
pub struct Net {
    /// `aot-<pid>-<k>`: every namespace of this net starts with it.
    prefix: String,
    /// The switch's namespace, holding `br0` and the hosts' ports.
    switch: String,
    hosts: Mutex<Hosts>,
}

/// What [`Net::host`] changes.
struct Hosts {
    /// Namespaces of the hosts made so far, in order.
    netns: Vec<String>,
    /// Last octet of the next host's address.
    next: u8,
}

impl Net {
    /// Fails with a clear message when namespaces cannot be made (not root, no `ip`).
    pub fn new() -> anyhow::Result<Net> {
        delete_stale();
        let k = NETS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{PREFIX}{}-{k}", std::process::id());
        let switch = format!("{prefix}-sw");
        ip(&["netns", "add", &switch]).context(
            "cannot make a network namespace: the netns tests need root and iproute2's `ip`",
        )?;
        // From here on, Drop deletes the switch if a later step fails.
        let net = Net {
            prefix,
            switch,
            hosts: Mutex::new(Hosts {
                netns: Vec::new(),
                next: 2,
            }),
        };
        let sw = net.switch.as_str();
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// A new host named `name` (e.g. "controller", "w1") with the next address 10.77.0.<n>/24 (n from 2), loopback up, eth0 up, plugged into the switch.
    pub fn host(&self, name: &str) -> anyhow::Result<Host> {
        if name.is_empty()
            || name.len() > 40
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("bad host name {name:?}: want 1-40 of [A-Za-z0-9_-]");
        }
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let netns = format!("{}-{name}", self.prefix);
        if hosts.netns.contains(&netns) {
            bail!("this net already has a host named {name:?}");
        }
        let n = hosts.next;
        if n == 255 {
            bail!("this net is full: 10.77.0.2 to 10.77.0.254 are taken");
        }
        let host = Host {
            name: name.to_string(),
            ip: Ipv4Addr::new(10, 77, 0, n),
            netns,
            switch: self.switch.clone(),
            port: format!("p{n}"),
        };
        ip(&["netns", "add", &host.netns])?;
        if let Err(e) = host.plug() {
            let _ = ip(&["netns", "del", &host.netns]);
            return Err(e.context(format!("cannot set up host {name:?}")));
        }
        hosts.netns.push(host.netns.clone());
        hosts.next = n + 1;
        Ok(host)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let hosts = self.hosts.get_mut().unwrap_or_else(PoisonError::into_inner);
        // A host's namespace takes its eth0 along, and with it the veth's
        // other end, the switch port. The switch goes last.
        for netns in hosts.netns.iter().rev().chain([&self.switch]) {
            if let Err(e) = ip(&["netns", "del", netns]) {
                eprintln!("netns: cleanup: {e:#}");
            }
        }
    }
}

/// One test host: a network namespace with loopback and `eth0` at [`Host::ip`] on its [`Net`]'s switch.
///
/// Cloning it does not copy the namespace: every clone is the same host,
/// and the host lives as long as its `Net`.
#[derive(Clone)]
pub struct Host {
    /// The name given to [`Net::host`].
    pub name: String,
    /// The host's address, 10.77.0.<n>, on `eth0` (netmask /24).
    pub ip: Ipv4Addr,
    /// The namespace's name, for `ip -n <netns> …` or `ip netns exec <netns> …`.
    pub netns: String,
    /// The switch's namespace.
    switch: String,
    /// The host's port on the switch, in the switch's namespace.
    port: String,
}

impl Host {
    /// `program args…` run inside this host's namespace.
    ///
    /// `ip netns exec` enters the namespace (and a private mount namespace
    /// with the netns' own `/sys`) and then `execvp`s `program`: the child's
    /// [`std::process::Child::id`] is the program's pid, so the caller can
    /// signal and reap it as usual (the tests check this).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(tool("ip"));
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this host's network namespace:
    /// sockets it opens are the host's (the test process itself stays in
    /// the machine's namespace, where a transparent proxy may accept any
    /// connection).
    ///
    /// # Errors
    /// The namespace cannot be opened or entered.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/var/run/netns/{}", self.netns);
        let ns = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("cannot enter {path}"))?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Pulls the cable: from now on frames to and from this host are silently dropped (no RST, no ICMP, no link-down seen by the host's sockets), like a switch port dying. Established TCP connections must SURVIVE a cut of ~10 s and carry data again after `restore`.
    ///
    /// The host's switch port goes to the bridge state `disabled`: the
    /// bridge neither forwards nor floods frames to or from it, while the
    /// host's `eth0` keeps carrier, address and routes.
    pub fn cut(&self) -> anyhow::Result<()> {
        self.port_state(0, "disabled")
            .with_context(|| format!("cannot cut host {:?}", self.name))
    }

    /// Plugs the cable back in.
    ///
    /// The port goes back to `forwarding`; TCP connections resume with their
    /// next retransmission (up to a few seconds after a long cut).
    pub fn restore(&self) -> anyhow::Result<()> {
        self.port_state(3, "forwarding")
            .with_context(|| format!("cannot restore host {:?}", self.name))
    }

    /// Sets the bridge state of this host's switch port (`bridge link set
    /// … state <n>`) and reads it back: `ip link set … type bridge_slave
    /// state 0` was seen to succeed without changing anything.
    fn port_state(&self, state: u8, want: &str) -> anyhow::Result<()> {
        let (sw, port) = (self.switch.as_str(), self.port.as_str());
        let n = state.to_string();
        run(
            "bridge",
            &["-n", sw, "link", "set", "dev", port, "state", &n],
        )?;
        let shown = run("bridge", &["-n", sw, "link", "show", "dev", port])?;
        if !shown.contains(&format!(" state {want} ")) {
            bail!("port {port} of {sw} is not {want} after `bridge link set … state {n}`: {shown}");
        }
        Ok(())
    }

    /// Creates the veth pair (each end right in its namespace), plugs the
    /// port into the bridge, and brings up lo and eth0 with the address.
    fn plug(&self) -> anyhow::Result<()> {
        let (ns, sw, port) = (self.netns.as_str(), self.switch.as_str(), &self.port);
        ip(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", sw,
        ])?;
        ip(&["-n", sw, "link", "set", port, "master", "br0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", self.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::process::{Child, ChildStdin, Stdio};
    use std::sync::mpsc::{Receiver, RecvTimeoutError};
    use std::time::{Duration, Instant};

    /// `peer.py listen|connect ADDR PORT [CONNECT_TIMEOUT]`: prints
    /// `listening`/`connected`, then sends each stdin line over the
    /// connection and prints each received line as `got <line>`; prints
    /// `closed` on EOF and `error <Type> <message>` on any failure.
    const PEER: &str = r#"
import socket, sys, threading
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if mode == "listen":
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((addr, port))
        l.listen(8)
        print("listening", flush=True)
        c, _ = l.accept()
    else:
        c = socket.create_connection((addr, port), timeout=float(sys.argv[4]))
        c.settimeout(None)
    print("connected", flush=True)
except Exception as e:
    print("error", type(e).__name__, e, flush=True)
    sys.exit(1)
def pump():
    for line in sys.stdin:
        c.sendall(line.encode())
threading.Thread(target=pump, daemon=True).start()
buf = b""
try:
    while True:
        d = c.recv(4096)
        if not d:
            print("closed", flush=True)
            break
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            print("got", line.decode(), flush=True)
except Exception as e:
    print("error", type(e).__name__, e, flush=True)
"#;

    /// One running `PEER` in a host, killed (by pid) on drop.
    struct Peer {
        what: String,
        child: Child,
        stdin: ChildStdin,
        lines: Receiver<String>,
    }

    impl Peer {
        fn start(host: &Host, args: &[&str]) -> Peer {
            let what = format!("peer {args:?} in {}", host.name);
            let mut child = host
                .command("python3")
                .arg("-c")
                .arg(PEER)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let (tx, lines) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in stdout.lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Peer {
                what,
                child,
                stdin,
                lines,
            }
        }

        fn listen(host: &Host, addr: &str, port: u16) -> Peer {
            let p = Peer::start(host, &["listen", addr, &port.to_string()]);
            p.expect("listening", Duration::from_secs(10));
            p
        }

        fn connect(host: &Host, addr: &str, port: u16, timeout_s: u32) -> Peer {
            let (port, timeout) = (port.to_string(), timeout_s.to_string());
            Peer::start(host, &["connect", addr, &port, &timeout])
        }

        /// The next line, or `None` when none comes within `timeout`.
        fn next(&self, timeout: Duration) -> Option<String> {
            match self.lines.recv_timeout(timeout) {
                Ok(line) => Some(line),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some("<exited>".into()),
            }
        }

        fn expect(&self, want: &str, timeout: Duration) {
            let got = self.next(timeout);
            assert_eq!(got.as_deref(), Some(want), "{}", self.what);
        }

        fn send(&mut self, line: &str) {
            writeln!(self.stdin, "{line}").unwrap();
            self.stdin.flush().unwrap();
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    /// Connects a client in `b` to a listener in `a` at `a.ip:port`.
    fn pair(a: &Host, b: &Host, port: u16) -> (Peer, Peer) {
        let server = Peer::listen(a, &a.ip.to_string(), port);
        let client = Peer::connect(b, &a.ip.to_string(), port, 5);
        client.expect("connected", 10 * SEC);
        server.expect("connected", 10 * SEC);
        (server, client)
    }

    #[test]
    fn netns_hosts_talk_tcp_and_are_isolated_from_the_machine() {
        let net = Net::new().unwrap();
        let a = net.host("ctl").unwrap();
        let b = net.host("w1").unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(b.ip, Ipv4Addr::new(10, 77, 0, 3));

        let (mut server, mut client) = pair(&a, &b, 7000);
        client.send("ping");
        server.expect("got ping", 5 * SEC);
        server.send("pong");
        client.expect("got pong", 5 * SEC);

        // The machine's own namespace cannot reach a host. (A connect from
        // there may well succeed: a sandbox's transparent proxy can accept
        // any address. What matters is that the host's listener sees none.)
        let lone = Peer::listen(&a, &a.ip.to_string(), 7002);
        let from_root = TcpStream::connect_timeout(&SocketAddr::from((a.ip, 7002)), SEC);
        assert_eq!(
            lone.next(2 * SEC),
            None,
            "the machine reached {} ({from_root:?})",
            a.ip
        );

        // Loopback works inside a host, and is the host's own.
        let (mut server, client) = {
            let s = Peer::listen(&a, "127.0.0.1", 7001);
            let c = Peer::connect(&a, "127.0.0.1", 7001, 5);
            c.expect("connected", 10 * SEC);
            s.expect("connected", 10 * SEC);
            (s, c)
        };
        server.send("local");
        client.expect("got local", 5 * SEC);
        let other = Peer::connect(&b, "127.0.0.1", 7001, 5);
        let got = other.next(10 * SEC).unwrap_or_default();
        assert!(
            got.contains("ConnectionRefused"),
            "w1 reached ctl's lo: {got}"
        );
    }

    #[test]
    fn netns_command_child_pid_is_the_programs_pid() {
        let net = Net::new().unwrap();
        let a = net.host("a").unwrap();
        let out = a
            .command("sh")
            .args(["-c", "echo $$; ip -o -4 addr show dev eth0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = out.id();
        let out = out.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(pid.to_string().as_str()), "{text}");
        assert!(
            lines.next().unwrap_or("").contains("10.77.0.2/24"),
            "{text}"
        );
    }

    /// How many times the host's established connection to `port` has
    /// backed off its retransmission timer (`ss -i`'s `backoff`, absent
    /// while it is 0).
    fn backoff(host: &Host, port: u16) -> u32 {
        let dport = format!(":{port}");
        let ns = host.netns.as_str();
        let args = [
            "-N",
            ns,
            "-tinH",
            "state",
            "established",
            "dport",
            "=",
            &dport,
        ];
        let shown = run("ss", &args).unwrap();
        shown
            .split_whitespace()
            .find_map(|field| field.strip_prefix("backoff:")?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn netns_cut_drops_silently_and_tcp_survives_restore() {
        let net = Net::new().unwrap();
        let a = net.host("ctl").unwrap();
        let b = net.host("w1").unwrap();
        let (mut server, mut client) = pair(&a, &b, 7000);
        client.send("before");
        server.expect("got before", 5 * SEC);

        b.cut().unwrap();
        let cut_at = Instant::now();
        client.send("during");
        // A new connection attempt meanwhile times out, it is not refused.
        let late = Peer::connect(&b, &a.ip.to_string(), 7000, 3);
        assert_eq!(server.next(3 * SEC), None, "a frame crossed the cut");
        let got = late.next(5 * SEC).unwrap_or_default();
        assert!(got.contains("timed out"), "connect during the cut: {got}");
        // The host sees no link-down: carrier, address and route stay.
        let link = ip(&["-n", &b.netns, "-o", "link", "show", "eth0"]).unwrap();
        assert!(
            link.contains("LOWER_UP") && !link.contains("NO-CARRIER"),
            "{link}"
        );
        let routes = ip(&["-n", &b.netns, "route"]).unwrap();
        assert!(routes.contains("10.77.0.0/24"), "{routes}");

        // A long cut, as TCP knows it: the sender has doubled its
        // retransmission timeout five times (about 6 s of silence).
        crate::eventually("the client backs off five times", 30 * SEC, || {
            (backoff(&b, 7000) >= 5).then_some(())
        });
        // Neither end noticed anything: no reset, no error, no EOF.
        assert_eq!(client.next(Duration::ZERO), None, "client during the cut");
        assert_eq!(server.next(Duration::ZERO), None, "server during the cut");
        b.restore().unwrap();
        let restored_at = Instant::now();
        // With the next retransmission: at most 2^backoff x 200 ms later.
        server.expect("got during", 30 * SEC);
        eprintln!(
            "cut held {:?}; the write sent during it arrived {:?} after restore",
            restored_at - cut_at,
            restored_at.elapsed()
        );
        server.send("after");
        client.expect("got after", 5 * SEC);
        client.send("again");
        server.expect("got again", 5 * SEC);
        // Only the cut host was cut: the other one was never affected.
        let c = net.host("w2").unwrap();
        b.cut().unwrap();
        let (mut s2, c2) = pair(&a, &c, 7002);
        s2.send("w2 fine");
        c2.expect("got w2 fine", 5 * SEC);
        b.restore().unwrap();
    }

    #[test]
    fn netns_drop_removes_every_namespace() {
        let net = Net::new().unwrap();
        let a = net.host("a").unwrap();
        let b = net.host("b").unwrap();
        let ours = [a.netns.clone(), b.netns.clone(), net.switch.clone()];
        let before = netns_list().unwrap();
        for n in &ours {
            assert!(before.contains(n), "{n} missing in {before:?}");
        }
        drop(net);
        let after = netns_list().unwrap();
        for n in &ours {
            assert!(!after.contains(n), "{n} left behind: {after:?}");
        }
    }

    #[test]
    fn netns_new_deletes_leftovers_of_dead_processes() {
        let mut gone = Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let stale = format!("{PREFIX}{dead}-0-sw");
        ip(&["netns", "add", &stale]).unwrap();
        let _net = Net::new().unwrap();
        let left = netns_list().unwrap();
        if left.contains(&stale) {
            let _ = ip(&["netns", "del", &stale]);
            panic!("{stale} (pid {dead} is dead) survived Net::new: {left:?}");
        }
    }

    #[test]
    fn netns_two_nets_share_a_subnet() {
        let nets = [Net::new().unwrap(), Net::new().unwrap()];
        let hosts: Vec<_> = nets
            .iter()
            .map(|n| (n.host("ctl").unwrap(), n.host("w1").unwrap()))
            .collect();
        assert_eq!(hosts[0].0.ip, hosts[1].0.ip);
        assert_ne!(hosts[0].0.netns, hosts[1].0.netns);
        // Both listeners up at once on the same address and port; each
        // client reaches its own net's.
        let pairs: Vec<_> = hosts.iter().map(|(a, b)| pair(a, b, 7000)).collect();
        for (i, (mut server, client)) in pairs.into_iter().enumerate() {
            server.send(&format!("net{i}"));
            client.expect(&format!("got net{i}"), 5 * SEC);
        }
        // A cut in one net leaves the other alone.
        hosts[0].1.cut().unwrap();
        let (mut server, client) = pair(&hosts[1].0, &hosts[1].1, 7001);
        server.send("still");
        client.expect("got still", 5 * SEC);
    }
}
