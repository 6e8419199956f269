//! Isolation, tested from inside computers: what a program in one computer
//! can see and reach, and what happens to everyone else when it misbehaves.
//! Real computers on the `local` runtime; needs root.

use std::path::Path;
use std::time::{Duration, Instant};

use raworc_testkit::computer::{await_some, cgroup_dirs, cgroup_file};
use raworc_testkit::{Backend, StatusCode, TestApp};
use serde_json::json;

const RAWORC: &str = env!("CARGO_BIN_EXE_raworc");

/// How many forks computer `id`'s process limit refused (`pids.events`).
fn pids_refused(id: &str) -> u64 {
    cgroup_dirs(id)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("pids.events")).ok())
        .filter_map(|events| {
            events
                .lines()
                .find_map(|l| l.strip_prefix("max ").and_then(|n| n.trim().parse().ok()))
        })
        .max()
        .unwrap_or(0)
}

/// This machine's address on its default route (not loopback), if it has one.
fn host_address() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_sees_and_reaches_nothing_but_itself_and_its_excesses_stay_inside() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        // Small limits, so that the excesses below hit them quickly.
        c.computer_memory_mb = 768;
        c.computer_pids = 300;
        // The API on every address, so that "unreachable" is the network's doing.
        c.bind = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    let token = app.operator("dev", "user").await;
    let a = app.session(&token, json!({"name": "a"})).await;
    let b = app.session(&token, json!({"name": "b"})).await;
    app.await_state(&token, &a, "running").await;
    app.await_state(&token, &b, "running").await;
    let marker = app.data_dir.join("host-only-marker");
    std::fs::write(&marker, "HOST-SECRET").unwrap();
    app.run(
        &token,
        &b,
        "echo b-private > /session/data/b.txt; (setsid sleep 4242 >/dev/null 2>&1 &)",
    )
    .await;

    // Started without a CPU cap (a faster start), capped once up: one core.
    let quota = cgroup_file(&a, "cpu.cfs_quota_us").or_else(|| cgroup_file(&a, "cpu.max"));
    let quota = quota.expect("a CPU controller file");
    assert!(quota.starts_with("100000"), "cpu quota {quota}");

    // Processes: its own only, its host supervisor as PID 1.
    let ps = app.run(&token, &a, "ps -eo pid=,args=").await;
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 /run/bin/raworc host")),
        "{ps}"
    );
    assert!(
        !ps.contains("sleep 4242"),
        "another computer's process is visible: {ps}"
    );
    assert!(
        !ps.contains("raworc serve") && !ps.contains("sessions-"),
        "{ps}"
    );

    // Files: neither the host's nor another computer's.
    let probe = format!(
        "cat {} 2>&1; ls {} 2>&1; cat /session/data/b.txt 2>&1; find / -xdev -name b.txt 2>/dev/null | wc -l",
        marker.display(),
        app.data_dir.display()
    );
    let out = app.exec_ok(&token, &a, &probe, 60).await;
    let text = out["stdout"].as_str().unwrap();
    assert!(
        !text.contains("HOST-SECRET") && !text.contains("b-private"),
        "{text}"
    );
    assert!(text.trim_end().ends_with('0'), "{text}");

    // Privileges: an unprivileged user with no capabilities and no way up.
    let status = app.run(&token, &a, "id -u; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status").await;
    assert!(status.starts_with("1000\n"), "{status}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            status.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {status}"
        );
    }
    assert!(
        status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"),
        "{status}"
    );
    // No new user namespaces (root in one reaches much more of the kernel),
    // and the browser runs regardless.
    let userns = app.exec_ok(&token, &a, "unshare -Ur id -u", 30).await;
    assert_ne!(
        userns["exit_code"], 0,
        "a user namespace was made: {userns}"
    );
    assert!(
        userns["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("Operation not permitted")),
        "{userns}"
    );
    let browser = app.run(&token, &a, "pgrep -c -x chromium").await;
    assert_ne!(browser.trim(), "0", "no browser runs: {browser}");
    for attempt in [
        "su -c true root </dev/null",
        "mount -t tmpfs none /tmp",
        "echo x > /etc/x",
        "dmesg",
        "cat /proc/kcore > /dev/null",
    ] {
        let out = app.exec_ok(&token, &a, attempt, 30).await;
        assert_ne!(out["exit_code"], 0, "{attempt} succeeded: {out}");
    }

    // Network: loopback only; the control plane and the world are unreachable.
    let routes = app
        .run(
            &token,
            &a,
            "cat /proc/net/route | tail -n +2 | wc -l; ls /sys/class/net",
        )
        .await;
    assert_eq!(routes, "0\nlo\n", "{routes}");
    let mut targets = vec![
        "1.1.1.1:80".to_string(),
        format!("127.0.0.1:{}", app.addr.port()),
    ];
    if let Some(ip) = host_address() {
        targets.push(format!("{ip}:{}", app.addr.port()));
    }
    for target in &targets {
        let (host, port) = target.split_once(':').unwrap();
        let out = app
            .exec_ok(
                &token,
                &a,
                &format!("timeout 5 bash -c 'echo > /dev/tcp/{host}/{port}'"),
                30,
            )
            .await;
        assert_ne!(out["exit_code"], 0, "{target} is reachable: {out}");
    }

    // A fork bomb hits its computer's process limit; everyone else goes on.
    let bombed = Instant::now();
    let bomb = app
        .exec_ok(
            &token,
            &a,
            "bash -c 'b() { b | b & }; b' 2>/dev/null; sleep 4; echo done",
            20,
        )
        .await;
    assert!(bomb["exit_code"].is_i64(), "{bomb}");
    let refused = pids_refused(&a);
    assert!(refused > 0, "the bomb never reached the process limit");
    let health = app.get("/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(app.run(&token, &b, "echo fine").await, "fine\n");
    assert!(bombed.elapsed() < Duration::from_secs(60));

    // A memory hog is killed inside its computer, which lives on.
    let hog = app
        .exec_ok(
            &token,
            &b,
            "python3 -c 'x = []\nwhile True: x.append(bytearray(64 << 20))'",
            60,
        )
        .await;
    assert_eq!(hog["exit_code"], 137, "the OOM killer ends the hog: {hog}");
    assert_eq!(app.run(&token, &b, "echo alive").await, "alive\n");
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);

    // Deleting the bombed computer ends every one of its processes.
    let r = app
        .delete(&format!("/api/v0/sessions/{a}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    await_some("the bombed computer to be gone", 60, || async {
        (!app.data_dir.join("computers").join(&a).exists()).then_some(())
    })
    .await;
    assert_eq!(
        app.state().runtime.as_ref().unwrap().running(),
        vec![b.clone()]
    );
    std::fs::remove_file(&marker).unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_reaches_the_internet_but_never_the_host_or_other_computers() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.bind = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    let token = app.operator("dev", "user").await;
    let r = app
        .post(
            "/api/v0/sessions",
            Some(&token),
            json!({"network": "everywhere"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let out = app.session(&token, json!({"network": "egress"})).await;
    let peer = app.session(&token, json!({"network": "egress"})).await;
    let closed = app.session(&token, json!({})).await;
    for id in [&out, &peer, &closed] {
        app.await_state(&token, id, "running").await;
    }
    let s = app
        .get(&format!("/api/v0/sessions/{out}"), Some(&token))
        .await;
    assert_eq!(s.body["network"], "egress");
    let s = app
        .get(&format!("/api/v0/sessions/{closed}"), Some(&token))
        .await;
    assert_eq!(s.body["network"], "none");

    // Out to the internet, by name.
    let code = app
        .run(
            &token,
            &out,
            "curl -s -o /dev/null -w '%{http_code}' -m 20 http://deb.debian.org/debian/",
        )
        .await;
    assert_eq!(code, "200");
    // The session without egress cannot.
    let none = app
        .exec_ok(
            &token,
            &closed,
            "curl -s -m 5 http://deb.debian.org/debian/",
            30,
        )
        .await;
    assert_ne!(none["exit_code"], 0, "{none}");

    // No IPv6 at all (no link-local path to the host).
    let v6 = app.run(&token, &out, "ip -6 addr show dev eth0").await;
    assert!(!v6.contains("inet6"), "{v6}");

    // Not the host: neither through its gateway address nor its own.
    let gateway = app
        .run(&token, &out, "ip route show default | cut -d' ' -f3")
        .await;
    let mut targets = vec![format!("{}:{}", gateway.trim(), app.addr.port())];
    if let Some(ip) = host_address() {
        targets.push(format!("{ip}:{}", app.addr.port()));
        targets.push(format!("{ip}:22"));
    }
    // Not another computer, even one listening.
    app.run(
        &token,
        &peer,
        "(setsid python3 -m http.server 8080 >/dev/null 2>&1 &)",
    )
    .await;
    let peer_ip = app
        .run(
            &token,
            &peer,
            "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1",
        )
        .await;
    await_some("the peer's server", 30, || async {
        let r = app
            .exec_ok(
                &token,
                &peer,
                "curl -s -m 2 -o /dev/null http://127.0.0.1:8080/",
                10,
            )
            .await;
        (r["exit_code"] == 0).then_some(())
    })
    .await;
    targets.push(format!("{}:8080", peer_ip.trim()));
    for target in &targets {
        let (host, port) = target.split_once(':').unwrap();
        let probe = format!("timeout 5 bash -c 'echo > /dev/tcp/{host}/{port}'");
        let r = app.exec_ok(&token, &out, &probe, 30).await;
        assert_ne!(
            r["exit_code"], 0,
            "{target} is reachable from a computer: {r}"
        );
    }

    // Deleting the computers leaves no interface behind.
    for id in [&out, &peer, &closed] {
        let r = app
            .delete(&format!("/api/v0/sessions/{id}"), Some(&token))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    await_some("the computers to be gone", 60, || async {
        app.state()
            .runtime
            .as_ref()
            .unwrap()
            .running()
            .is_empty()
            .then_some(())
    })
    .await;
    // The kernel drops a veth pair when it frees the computer's network
    // namespace, a moment after the last process: wait for that.
    await_some("every veth pair to be gone", 30, || async {
        let links = std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        (!links.lines().any(|l| l.contains(": rw"))).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sets_its_own_limits_within_the_servers() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await;
    let token = app.operator("dev", "user").await;
    for (limits, says) in [
        (json!({"memory_mb": 4096}), "limits.memory_mb"),
        (json!({"pids": 10}), "limits.pids"),
        (json!({"millicores": 5000}), "limits.millicores"),
        (json!({"disk_gb": 5}), "disk_gb"),
    ] {
        let r = app
            .post(
                "/api/v0/sessions",
                Some(&token),
                json!({ "limits": limits }),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{limits}: {:?}",
            r.body
        );
        assert!(r.error().contains(says), "{limits}: {}", r.error());
    }
    let id = app
        .session(
            &token,
            json!({"limits": {"memory_mb": 512, "pids": 200, "millicores": 500}}),
        )
        .await;
    app.await_state(&token, &id, "running").await;
    let s = app
        .get(&format!("/api/v0/sessions/{id}"), Some(&token))
        .await;
    assert_eq!(
        s.body["limits"],
        json!({"memory_mb": 512, "pids": 200, "millicores": 500})
    );
    let memory =
        cgroup_file(&id, "memory.limit_in_bytes").or_else(|| cgroup_file(&id, "memory.max"));
    assert_eq!(memory.as_deref().map(str::trim), Some("536870912"));
    assert_eq!(
        cgroup_file(&id, "pids.max").as_deref().map(str::trim),
        Some("200")
    );
    let quota = cgroup_file(&id, "cpu.cfs_quota_us").or_else(|| cgroup_file(&id, "cpu.max"));
    assert!(quota.unwrap_or_default().starts_with("50000"));
    // A remix takes its parent's limits.
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/remix"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.body["limits"]["memory_mb"], 512, "{:?}", r.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_run_directory_lead_nowhere() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
    })
    .await;
    let token = app.operator("dev", "user").await;
    let id = app.session(&token, json!({})).await;
    app.await_state(&token, &id, "running").await;

    // A socket and a file of the host that the computer names by path.
    let outside = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        outside.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let socket = outside.path().join("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();

    app.run(
        &token,
        &id,
        &format!(
            "ln -sf {s} /run/raworc/vnc.sock && ln -sf {v} /run/raworc/config.json",
            s = socket.display(),
            v = victim.display()
        ),
    )
    .await;
    // The desktop stream refuses a socket served from outside the computer.
    let url = format!("ws://{}/vnc/{id}/stream?token={token}", app.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 502)
        }
        other => panic!("the stream opened onto a host socket: {:?}", other.is_ok()),
    }
    // Nothing was ever sent to the host's socket.
    if let Ok((mut stream, _)) = listener.accept() {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = stream.read_to_end(&mut buf);
        assert!(buf.is_empty(), "the control plane talked to a host socket");
    }

    // A restart writes its configuration afresh, not through the link.
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/close"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    await_some("closed", 60, || async {
        let r = app
            .get(&format!("/api/v0/sessions/{id}"), Some(&token))
            .await;
        (r.body["state"] == "closed").then_some(())
    })
    .await;
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/restore"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.await_state(&token, &id, "running").await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "the victim was not handed over"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaces_are_made_only_where_the_server_allows_them() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        raworc_testkit::computer::enable(c, Path::new(RAWORC));
        c.allow_user_namespaces = true;
    })
    .await;
    let token = app.admin_token.clone();
    let id = app.session(&token, json!({"name": "userns"})).await;
    app.await_state(&token, &id, "running").await;
    assert_eq!(app.run(&token, &id, "unshare -Ur id -u").await, "0\n");
    // The browser builds its own sandbox from them, so it runs without
    // `--no-sandbox`.
    let flags = app
        .run(
            &token,
            &id,
            "tr '\\0' ' ' < /proc/$(pgrep -o -x chromium)/cmdline",
        )
        .await;
    assert!(!flags.contains("--no-sandbox"), "{flags}");
    app.stop().await;
}
