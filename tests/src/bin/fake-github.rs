//! The fake GitHub as a process, for trying ao by hand or for a bench:
//!
//! ```text
//! FAKE_GITHUB_TOKEN=t fake-github acme/app=/path/to/app.git [more owner/name=bare ...]
//! ```
//!
//! Prints `URL=<apiUrl>` once it listens, then serves until killed. The
//! token comes from the environment so it never shows in `ps`. With
//! `FAKE_GITHUB_WEBHOOK_URL` and `FAKE_GITHUB_WEBHOOK_SECRET` set, every
//! change is delivered there, signed.

use std::path::Path;

use anyhow::{bail, Context};
use ao_tests::github::FakeGithub;

fn main() -> anyhow::Result<()> {
    let token = std::env::var("FAKE_GITHUB_TOKEN").context("FAKE_GITHUB_TOKEN is not set")?;
    let repos: Vec<String> = std::env::args().skip(1).collect();
    if repos.is_empty() {
        bail!("usage: fake-github owner/name=/path/to/bare.git ...");
    }
    let fake = FakeGithub::start(&token);
    for arg in &repos {
        let (name, bare) = arg
            .split_once('=')
            .with_context(|| format!("{arg:?} is not owner/name=/path/to/bare.git"))?;
        fake.add_repo(name, Path::new(bare));
    }
    if let Ok(url) = std::env::var("FAKE_GITHUB_WEBHOOK_URL") {
        let secret = std::env::var("FAKE_GITHUB_WEBHOOK_SECRET")
            .context("FAKE_GITHUB_WEBHOOK_URL needs FAKE_GITHUB_WEBHOOK_SECRET")?;
        fake.webhooks(&url, &secret);
    }
    println!("URL={}", fake.url());
    loop {
        std::thread::park();
    }
}
