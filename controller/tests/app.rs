//! A whole controller in this process: started from a `ControllerConfig` on
//! the embedded store, spoken to over its Unix socket with the CLI's
//! client, and stopped.

use ao_controller::app::{AppError, Controller, ControllerConfig, ListenConfig};
use ao_controller::config::parse_str;
use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb::controller_client::ControllerClient;
use ao_proto::pb::{InfoRequest, ListSessionsRequest, ShutdownRequest};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CONFIG: &str = "projects:\n  app:\n    path: /nowhere\n    agent: codex\n";

async fn client(controller: &Controller) -> ControllerClient<tonic::transport::Channel> {
    let addr = ControllerAddr::Unix(controller.socket().to_path_buf());
    ControllerClient::new(dial::connect(&addr, None).await.unwrap())
}

fn config(home: &std::path::Path) -> ControllerConfig {
    let path = home.join("agent-orchestrator.yaml");
    let parsed = parse_str(CONFIG, &path, &|_| None).unwrap();
    ControllerConfig {
        apply: Some((path, parsed)),
        ..ControllerConfig::local(home)
    }
}

#[tokio::test]
async fn serves_its_unix_socket_until_stopped() {
    let home = tempfile::tempdir().unwrap();
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let controller = Controller::start(config(home.path()), &tasks, stop.clone())
        .await
        .unwrap();
    let mut cli = client(&controller).await;

    let info = cli.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.ao_home, home.path().display().to_string());
    assert_eq!(info.projects, ["app"]);
    assert_eq!(
        info.store,
        format!("embedded:{}", home.path().join("store.redb").display())
    );
    assert_eq!(info.controller_url, "");
    let sessions = cli
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(sessions.sessions.is_empty());
    // In-process callers see the same state through its handle.
    assert_eq!(controller.handle().snapshot().projects(), ["app"]);

    drop(cli);
    stop.cancel();
    controller.wait().await.unwrap();
    // Nothing it started outlives it.
    tasks.close();
    tasks.wait().await;
    let socket = ControllerAddr::Unix(home.path().join("ao.sock"));
    assert!(
        dial::connect(&socket, None).await.is_err(),
        "it still answers"
    );
}

#[tokio::test]
async fn a_clients_shutdown_stops_it() {
    let home = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let controller = Controller::start(config(home.path()), &TaskTracker::new(), stop.clone())
        .await
        .unwrap();
    let mut cli = client(&controller).await;
    cli.shutdown(ShutdownRequest {}).await.unwrap();
    drop(cli);
    controller.wait().await.unwrap();
    assert!(stop.is_cancelled(), "Shutdown stops the whole process");
}

#[tokio::test]
async fn listening_without_a_cluster_ca_names_the_missing_directory() {
    let home = tempfile::tempdir().unwrap();
    let pki_dir = home.path().join("pki");
    let config = ControllerConfig {
        listen: Some(ListenConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            pki_dir: pki_dir.clone(),
            worker_cert_ttl: std::time::Duration::from_secs(3600),
        }),
        ..ControllerConfig::local(home.path())
    };
    let started = Controller::start(config, &TaskTracker::new(), CancellationToken::new()).await;
    let err = match started {
        Ok(_) => panic!("started without a cluster CA"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, AppError::NoCa { dir } if *dir == pki_dir),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("run `ao controller init` first"),
        "{err}"
    );
}
