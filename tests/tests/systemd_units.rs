//! The units of deploy/systemd are ones systemd takes: `systemd-analyze
//! verify` in a root holding them, systemd's own units and `ao`.

use ao_tests::ao_bin;
use ao_tests::containers::{repo_root, verify_unit};

/// The units deploy/systemd ships pass `systemd-analyze verify`.
#[test]
fn shipped_units_verify() {
    let root = repo_root().join("deploy/systemd");
    let bin = ao_bin();
    let env = root.join("controller.env");
    verify_unit(
        "ao-controller.service",
        &root.join("ao-controller.service"),
        &[
            ("/usr/local/bin/ao", &bin),
            ("/etc/ao/controller.env", &env),
        ],
    )
    .unwrap_or_else(|e| panic!("ao-controller.service: {e}"));
    verify_unit(
        "ao-worker.service",
        &root.join("ao-worker.service"),
        &[("/usr/local/bin/ao", &bin)],
    )
    .unwrap_or_else(|e| panic!("ao-worker.service: {e}"));
}
