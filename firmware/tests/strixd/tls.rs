//! TLS: MQTT with client certificates, HTTPS webhooks, TLS files checked at load.

use super::harness::*;

/// A test CA, a server certificate for localhost / 127.0.0.1 and a client
/// certificate, made with the `openssl` CLI in `dir` (world-readable: the
/// broker drops root for its own user before it reads them).
fn make_pki(dir: &Path) {
    need_tool("openssl");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=strix test CA",
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .current_dir(dir),
    );
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "strixd", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .unwrap();
        run_ok(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args([
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ])
                .args(["-subj", &format!("/CN={cn}")])
                .current_dir(dir),
        );
        run_ok(
            Command::new("openssl")
                .args([
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                ])
                .args([
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.pem"),
                ])
                .args(["-extfile", &format!("{name}.ext")])
                .current_dir(dir),
        );
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

#[test]
fn mqtt_over_tls_with_password_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    run_ok(
        Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(d.join("passwd"))
            .args(["strixd", "s3cret"]),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("passwd"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_port();
    // The broker: TLS only, a client certificate from the test CA and a
    // password from the password file are both required.
    let mut broker = Broker::start(d, port);
    broker.stop();
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\nallow_anonymous false\npassword_file {0}/passwd\nlog_dest stderr\nlog_type all\n",
        d.display()
    );
    std::fs::write(&broker.conf, conf).unwrap();
    broker.restart();
    let tls = strix_firmware::tls::client_config(
        Some(&d.join("ca.pem")),
        Some((&d.join("client.pem"), &d.join("client.key"))),
    )
    .unwrap();
    let mut o = MqttOptions::new("t-tls", "localhost", port);
    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        tls,
    )));
    o.set_credentials("strixd", "s3cret");
    let got = subscribe_with(o);
    let cfg_for = |ca: &str, password: &str| {
        write_config(
            d,
            &format!(
                "device = \"tls1\"\n[stdout]\nenabled = true\n[shutdown]\ndrain_timeout_s = 3\n[mqtt]\nhost = \"localhost\"\nport = {port}\ntls = true\n{ca}\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\nusername = \"strixd\"\npassword = \"{password}\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n"
            ),
        )
    };
    // The system roots do not trust the test CA: the broker is refused.
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for("", "s3cret"));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let untrusted = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(got.lock().unwrap().is_empty());
    // A wrong password: a clear error, and the alerts stay in the outbox
    // (with the ones the run above left there).
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for("ca_file = \"ca.pem\"", "wrong"));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let first = alerts(&lines);
    assert!(first.len() >= 4, "{first:#?}");
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("the broker refused the login")
            && log.contains("check mqtt.username and mqtt.password"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{} alert(s) stay in the outbox", 2 * first.len())),
        "{log}"
    );
    assert!(got.lock().unwrap().is_empty());
    // The right password: this run's alerts and the first run's arrive over TLS.
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for("ca_file = \"ca.pem\"", "s3cret"));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(500));
    let second = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("mqtt: connected"), "{log}");
    let got = got.lock().unwrap().clone();
    assert_all_delivered(&untrusted, &got);
    assert_all_delivered(&first, &got);
    assert_all_delivered(&second, &got);
    let blog = std::fs::read_to_string(d.join("mosquitto.log")).unwrap();
    assert!(blog.contains("as strixd-tls1"), "{blog}");
}

#[test]
fn webhook_over_https_checks_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let pem = |name: &str| std::fs::read(d.join(name)).unwrap();
    let certs = rustls_pemfile::certs(&mut pem("server.pem").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem("server.key").as_slice())
        .unwrap()
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let hook = HookServer::start(0, Some(Arc::new(server)));
    let cfg_for = |ca: &str| {
        write_config(
            d,
            &format!(
                "device = \"hook2\"\n[stdout]\nenabled = true\n[shutdown]\ndrain_timeout_s = 3\n[webhook]\nurl = \"https://localhost:{}/in\"\n{ca}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n",
                hook.port
            ),
        )
    };
    // System roots: the test CA is not trusted, nothing is accepted.
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for(""));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let untrusted = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(hook.seen.lock().unwrap().is_empty());
    // With the CA: this run's alerts and the kept ones arrive, in order.
    let (mut child, lines, _) = spawn_strixd_logged(&cfg_for("ca_file = \"ca.pem\""));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let mut want = untrusted;
    want.extend(alerts(&lines));
    let got: Vec<Value> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn check_refuses_missing_or_wrong_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let check = |mqtt: &str| {
        let cfg = write_config(
            d,
            &format!("device = \"k1\"\n[mqtt]\nhost = \"localhost\"\ntls = true\n{mqtt}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\n"),
        );
        let out = Command::new(strixd())
            .arg("--config")
            .arg(&cfg)
            .arg("--check")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) =
        check("ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"");
    assert_eq!(code, 0, "{err}");
    for (mqtt, key, why) in [
        ("ca_file = \"missing.pem\"", "mqtt.ca_file", "missing.pem"),
        (
            "ca_file = \"client.key\"",
            "mqtt.ca_file",
            "no PEM certificates",
        ),
        ("ca_file = \"client.ext\"", "mqtt.ca_file", "client.ext"),
        (
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"missing.key\"",
            "mqtt.client_key",
            "missing.key",
        ),
        // Someone else's key: it does not match the certificate.
        (
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"server.key\"",
            "mqtt.client_key",
            "client.pem",
        ),
    ] {
        let (code, err) = check(mqtt);
        assert_eq!(code, 2, "{mqtt}: {err}");
        assert!(
            err.contains(&format!("config key `{key}`")) && err.contains(why),
            "{mqtt}: {err}"
        );
    }
}
