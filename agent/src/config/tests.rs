#![allow(clippy::unwrap_used)]

use super::*;

/// A scratch directory holding the config file and the node name file.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Inputs reading `agent.toml` from here, with no node name file and host name `host-1`.
    fn inputs(&self, toml: &str) -> Inputs {
        let config = self.write("agent.toml", toml);
        let mut env = BTreeMap::new();
        env.insert("TABBY_NODENAME_FILE".to_string(), self.path("nodename").display().to_string());
        Inputs {
            cli: Cli { config: Some(config), ..Cli::default() },
            env,
            hostname: Some("host-1".into()),
        }
    }
}

fn invalid(err: ConfigError) -> (Field, Source, String) {
    match err {
        ConfigError::Invalid { field, origin, reason } => (field, origin, reason),
        other => panic!("expected an invalid-value error, got {other:?}"),
    }
}

#[test]
fn defaults_from_an_empty_file() {
    let scratch = Scratch::new();
    let loaded = load(&scratch.inputs("")).unwrap();
    let c = loaded.config;
    assert_eq!(loaded.file, Some(scratch.path("agent.toml")));
    assert_eq!(c.nodename, "host-1");
    assert_eq!(c.nodename_source, Source::Hostname);
    assert_eq!(c.metrics_addr, "127.0.0.1:9099".parse().unwrap());
    assert_eq!(c.resync_interval, Duration::from_secs(90));
    assert_eq!(c.route_refresh_interval, Duration::from_secs(90));
    assert_eq!(c.status_interval, Duration::from_secs(10));
    assert_eq!(c.default_endpoint_to_host_action, EndpointToHostAction::Drop);
    assert_eq!(c.nft_table, "tabby");
    assert_eq!(c.etcd.endpoints, vec!["http://127.0.0.1:2379"]);
    assert_eq!(c.etcd.prefix, "/calico");
    assert_eq!(c.node_ip, None);
    assert_eq!(c.log_level, "info");
    assert!(!c.docker.enabled && !c.bgp.enabled);
    assert_eq!(c.docker.socket_dir, PathBuf::from("/run/docker/plugins"));
    assert_eq!(c.docker.driver_name, "tabby");
    assert_eq!(c.docker.engine_socket, PathBuf::from("/var/run/docker.sock"));
}

#[test]
fn default_config_path_may_be_absent_but_a_named_one_may_not() {
    let none = BTreeMap::new();
    assert_eq!(
        layers::config_path(&Cli::default(), &none),
        (PathBuf::from(DEFAULT_CONFIG_PATH), false)
    );
    let cli = Cli { config: Some("/x.toml".into()), ..Cli::default() };
    let env = BTreeMap::from([(CONFIG_ENV.to_string(), "/y.toml".to_string())]);
    assert_eq!(layers::config_path(&cli, &env), (PathBuf::from("/x.toml"), true));
    assert_eq!(layers::config_path(&Cli::default(), &env), (PathBuf::from("/y.toml"), true));
}

#[test]
fn file_then_env_then_flag() {
    let scratch = Scratch::new();
    let mut inputs = scratch.inputs(
        r#"
        nodename = "from-file"
        resync_interval = "30s"
        node_ip = "192.0.2.1/24"
        nft_table = "filetable"
        [etcd]
        endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        prefix = "/file"
        "#,
    );
    let c = load(&inputs).unwrap().config;
    assert_eq!(c.nodename, "from-file");
    assert_eq!(c.resync_interval, Duration::from_secs(30));
    assert_eq!(c.etcd.endpoints, vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    assert_eq!(
        c.node_ip,
        Some(NodeIp { addr: "192.0.2.1".parse().unwrap(), prefix_len: Some(24) })
    );

    inputs.env.insert("TABBY_NODENAME".into(), "from-env".into());
    inputs.env.insert("TABBY_RESYNC_INTERVAL".into(), "2m".into());
    inputs.env.insert("TABBY_ETCD_ENDPOINTS".into(), "http://10.0.0.9:2379".into());
    // An empty variable does not wipe out the file's value.
    inputs.env.insert("TABBY_NFT_TABLE".into(), String::new());
    let c = load(&inputs).unwrap().config;
    assert_eq!(c.nodename, "from-env");
    assert_eq!(c.nodename_source, Source::Env("TABBY_NODENAME"));
    assert_eq!(c.resync_interval, Duration::from_mins(2));
    assert_eq!(c.etcd.endpoints, vec!["http://10.0.0.9:2379"]);
    assert_eq!(c.nft_table, "filetable");
    assert_eq!(c.etcd.prefix, "/file");

    inputs.cli.nodename = Some("from-flag".into());
    inputs.cli.resync_interval = Some("45".into());
    inputs.cli.etcd_prefix = Some("/flag/".into());
    let c = load(&inputs).unwrap().config;
    assert_eq!(c.nodename, "from-flag");
    assert_eq!(c.nodename_source, Source::Flag("--nodename"));
    assert_eq!(c.resync_interval, Duration::from_secs(45));
    assert_eq!(c.etcd.prefix, "/flag");
    assert_eq!(c.etcd.endpoints, vec!["http://10.0.0.9:2379"]);
}

#[test]
fn nodename_falls_back_to_file_then_hostname() {
    let scratch = Scratch::new();
    let inputs = scratch.inputs("");
    let c = load(&inputs).unwrap().config;
    assert_eq!((c.nodename.as_str(), &c.nodename_source), ("host-1", &Source::Hostname));
    scratch.write("nodename", "node-from-file\n");
    let c = load(&inputs).unwrap().config;
    assert_eq!(c.nodename, "node-from-file");
    assert_eq!(c.nodename_source, Source::NodenameFile(scratch.path("nodename")));

    let mut no_name = scratch.inputs("");
    no_name.hostname = None;
    no_name.env.insert("TABBY_NODENAME_FILE".into(), scratch.path("absent").display().to_string());
    assert!(matches!(load(&no_name), Err(ConfigError::NoNodename { .. })));

    // A host name that cannot name a Node resource is refused, not silently rewritten.
    let mut upper = no_name.clone();
    upper.hostname = Some("Host_1".into());
    let (field, source, reason) = invalid(load(&upper).unwrap_err());
    assert_eq!((field, source), (Field::Nodename, Source::Hostname));
    assert!(reason.contains("Host_1"), "{reason}");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let scratch = Scratch::new();
    let err = load(&scratch.inputs("resync_intervall = \"1s\"")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "resync_intervall"),
        "{err:?}"
    );
    assert!(err.to_string().contains("agent.toml"), "{err}");

    let err = load(&scratch.inputs("[etcd]\nendpoint = \"http://a:1\"")).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "etcd.endpoint"));
    let err = load(&scratch.inputs("[felix]\nx = 1")).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "felix"));
    // A setting is not a section.
    let err = load(&scratch.inputs("[nodename]\nx = 1")).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "nodename"));
}

#[test]
fn wrong_types_and_syntax_name_the_key() {
    let scratch = Scratch::new();
    let err = load(&scratch.inputs("nodename = [\"a\"]")).unwrap_err();
    assert!(matches!(&err, ConfigError::WrongType { key, .. } if key == "nodename"), "{err:?}");
    let err = load(&scratch.inputs("[etcd]\nendpoints = [1]")).unwrap_err();
    assert!(matches!(&err, ConfigError::WrongType { key, .. } if key == "etcd.endpoints"));
    let err = load(&scratch.inputs("nodename = ")).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
}

#[test]
fn errors_name_field_and_source() {
    let scratch = Scratch::new();
    let config_path = scratch.path("agent.toml");

    let (field, source, _) =
        invalid(load(&scratch.inputs("resync_interval = \"soon\"")).unwrap_err());
    assert_eq!((field, source), (Field::ResyncInterval, Source::File(config_path.clone())));

    let mut inputs = scratch.inputs("");
    inputs.env.insert("TABBY_METRICS_ADDR".into(), "localhost".into());
    let err = load(&inputs).unwrap_err();
    assert!(err
        .to_string()
        .contains("metrics_addr (from environment variable TABBY_METRICS_ADDR)"));

    let mut inputs = scratch.inputs("");
    inputs.cli.node_ip = Some("127.0.0.1".into());
    let (field, source, _) = invalid(load(&inputs).unwrap_err());
    assert_eq!((field, source), (Field::NodeIp, Source::Flag("--node-ip")));

    let mut inputs = scratch.inputs("");
    inputs.cli.default_endpoint_to_host_action = Some("allow".into());
    let (field, _, reason) = invalid(load(&inputs).unwrap_err());
    assert_eq!(field, Field::DefaultEndpointToHostAction);
    assert!(reason.contains("allow"));

    // Checks that span fields name the one at fault, with its own source.
    let mut inputs = scratch.inputs("[etcd]\nendpoints = \"https://e:2379\"");
    let (field, source, _) = invalid(load(&inputs).unwrap_err());
    assert_eq!((field, source), (Field::EtcdCaFile, Source::Default));
    inputs
        .env
        .insert("TABBY_ETCD_CA_FILE".into(), scratch.path("missing.pem").display().to_string());
    let (field, source, _) = invalid(load(&inputs).unwrap_err());
    assert_eq!((field, source), (Field::EtcdCaFile, Source::Env("TABBY_ETCD_CA_FILE")));
    let ca = scratch.write("ca.pem", "x");
    inputs.env.insert("TABBY_ETCD_CA_FILE".into(), ca.display().to_string());
    assert!(load(&inputs).is_ok());
    inputs.cli.etcd_endpoints = Some("http://e:2379".into());
    let (field, source, _) = invalid(load(&inputs).unwrap_err());
    assert_eq!((field, source), (Field::EtcdCaFile, Source::Env("TABBY_ETCD_CA_FILE")));
}

#[test]
fn values_are_checked() {
    let scratch = Scratch::new();
    let bad: [(&str, Field); 15] = [
        ("resync_interval = \"500ms\"", Field::ResyncInterval),
        ("route_refresh_interval = 0", Field::RouteRefreshInterval),
        ("status_interval = \"2h\"", Field::StatusInterval),
        ("node_ip = \"fd00::1\"", Field::NodeIp),
        ("node_ip = \"192.0.2.1/33\"", Field::NodeIp),
        ("node_ip = \"0.0.0.0\"", Field::NodeIp),
        ("nft_table = \"1abc\"", Field::NftTable),
        ("nft_table = \"a b\"", Field::NftTable),
        ("log_level = \"info,[\"", Field::LogLevel),
        ("[etcd]\nprefix = \"calico\"", Field::EtcdPrefix),
        ("[docker]\nenabled = \"maybe\"", Field::DockerEnabled),
        ("[docker]\ndriver_name = \"Tabby\"", Field::DockerDriverName),
        ("[docker]\ndriver_name = \"a/b\"", Field::DockerDriverName),
        ("[docker]\nengine_socket = \"docker.sock\"", Field::DockerEngineSocket),
        ("[etcd]\nendpoints = \"etcd:2379\"", Field::EtcdEndpoints),
    ];
    for (toml, field) in bad {
        let err = load(&scratch.inputs(toml)).unwrap_err();
        assert_eq!(invalid(err).0, field, "{toml}");
    }
    let c = load(&scratch.inputs(
        "log_level = \"agent=debug,info\"\ndefault_endpoint_to_host_action = \"ACCEPT\"\n\
         [docker]\nenabled = true\n[bgp]\nenabled = \"yes\"",
    ))
    .unwrap()
    .config;
    assert_eq!(c.log_level, "agent=debug,info");
    assert_eq!(c.default_endpoint_to_host_action, EndpointToHostAction::Accept);
    assert!(c.docker.enabled && c.bgp.enabled);
}

#[test]
fn unknown_tabby_variables_are_warned_about() {
    let scratch = Scratch::new();
    let mut inputs = scratch.inputs("");
    inputs.env.insert("TABBY_NODNAME".into(), "typo".into());
    inputs.env.insert("TABBY_CONFIG".into(), "/ignored/because/--config".into());
    let loaded = load(&inputs).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("TABBY_NODNAME"));
}

#[test]
fn config_file_is_found_through_env_and_must_exist_when_named() {
    let scratch = Scratch::new();
    let mut inputs = scratch.inputs("");
    inputs.cli.config = None;
    inputs.env.insert("TABBY_CONFIG".into(), scratch.path("agent.toml").display().to_string());
    scratch.write("agent.toml", "nodename = \"via-env-file\"");
    assert_eq!(load(&inputs).unwrap().config.nodename, "via-env-file");
    inputs.env.insert("TABBY_CONFIG".into(), scratch.path("nope.toml").display().to_string());
    assert!(matches!(load(&inputs), Err(ConfigError::Read { .. })));
}

#[test]
fn example_manifest_is_valid() {
    let text = include_str!("../../../manifests/agent.toml");
    let raw = layers::from_file(Path::new("manifests/agent.toml"), text).unwrap();
    // The example leaves the node name to the machine; give one so the test does not read it.
    let env = BTreeMap::from([("TABBY_NODENAME".to_string(), "host-1".to_string())]);
    let raw = raw.overlay(layers::from_env(&env).0);
    let c = resolve(&raw, None).unwrap();
    assert_eq!(c.metrics_addr, DEFAULT_METRICS_ADDR.parse().unwrap());
}

#[test]
fn bgp_settings() {
    let scratch = Scratch::new();
    let c = load(&scratch.inputs("")).unwrap().config;
    assert_eq!(c.bgp.bird_config, PathBuf::from(DEFAULT_BIRD_CONFIG));
    assert_eq!(c.bgp.bird_socket, PathBuf::from(DEFAULT_BIRD_SOCKET));
    assert_eq!(c.bgp.birdc, PathBuf::from("birdc"));
    assert_eq!(c.bgp.as_number, datastore::model::AsNumber(64512));
    let c = load(&scratch.inputs(
        "[bgp]\nenabled = true\nbird_config = \"/run/t/bird.conf\"\n\
         bird_socket = \"/run/t/bird.ctl\"\nbirdc = \"/usr/sbin/birdc\"\nas_number = \"1.10\"",
    ))
    .unwrap()
    .config;
    assert_eq!(c.bgp.bird_config, PathBuf::from("/run/t/bird.conf"));
    assert_eq!(c.bgp.bird_socket, PathBuf::from("/run/t/bird.ctl"));
    assert_eq!(c.bgp.as_number, datastore::model::AsNumber(65546));
    for (toml, field) in [
        ("[bgp]\nas_number = 0", Field::BgpAsNumber),
        ("[bgp]\nas_number = \"x\"", Field::BgpAsNumber),
        ("[bgp]\nas_number = 4294967296", Field::BgpAsNumber),
        ("[bgp]\nbird_config = \"bird.conf\"", Field::BgpBirdConfig),
        ("[bgp]\nbird_socket = \"bird.ctl\"", Field::BgpBirdSocket),
    ] {
        let err = load(&scratch.inputs(toml)).unwrap_err();
        assert_eq!(invalid(err).0, field, "{toml}");
    }
}

#[test]
fn the_shipped_manifest_is_a_valid_config_with_the_defaults_it_documents() {
    let scratch = Scratch::new();
    let shipped = include_str!("../../../manifests/agent.toml");
    let from_manifest = load(&scratch.inputs(shipped)).unwrap().config;
    let from_empty = load(&scratch.inputs("")).unwrap().config;
    // Every value the manifest spells out is the default it claims to be.
    assert_eq!(from_manifest.bgp, from_empty.bgp);
    assert_eq!(from_manifest.docker, from_empty.docker);
    assert_eq!(from_manifest.etcd, from_empty.etcd);
}

#[test]
fn docker_engine_socket_from_file_env_and_flag() {
    let scratch = Scratch::new();
    let mut inputs = scratch.inputs("[docker]\nengine_socket = \"/run/file/docker.sock\"");
    assert_eq!(
        load(&inputs).unwrap().config.docker.engine_socket,
        Path::new("/run/file/docker.sock")
    );
    inputs.env.insert("TABBY_DOCKER_ENGINE_SOCKET".into(), "/run/env/docker.sock".into());
    assert_eq!(
        load(&inputs).unwrap().config.docker.engine_socket,
        Path::new("/run/env/docker.sock")
    );
    inputs.cli.docker_engine_socket = Some("/run/flag/docker.sock".into());
    assert_eq!(
        load(&inputs).unwrap().config.docker.engine_socket,
        Path::new("/run/flag/docker.sock")
    );
    inputs.cli.docker_engine_socket = Some("docker.sock".into());
    let (field, _, reason) = invalid(load(&inputs).unwrap_err());
    assert_eq!(field, Field::DockerEngineSocket);
    assert!(reason.contains("not an absolute path"), "{reason}");
}
