//! The console end to end in headless Chromium (Debian's chromium and
//! chromium-driver, driven over WebDriver by fantoccini): log in, start a
//! run from the Run page and watch it complete on its page, stop a second,
//! long run, open the monthly top 5 and a creator's month, edit and pause
//! a schedule. A screenshot of each page goes to the test's output
//! directory (target/tmp/console/).

mod serve_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serve_support::*;

struct Driver {
    _child: tokio::process::Child,
    port: u16,
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "chromedriver is installed (apt-get install chromium chromium-driver; .ci/run does)",
        );
    for _ in 0..POLL_CAP {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Driver {
                _child: child,
                port,
            };
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.display())]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(out_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Reloads the page until the element's text satisfies `ok`.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    for _ in 0..POLL_CAP {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if ok(&t) {
                    return t;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = c.refresh().await;
    }
    panic!("{css} never reached the awaited text");
}

/// Waits, without reloading, until the element `css` satisfies `ok`;
/// stale elements of a page being replaced are looked up again.
async fn settle_on<F, Fut>(c: &Client, css: &str, ok: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..POLL_CAP {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if ok(e).await {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never reached the awaited state");
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    let h = harness("30000").await;
    let driver = chromedriver().await;
    let profile = tempdir();
    let c = browser(&driver, &profile).await;
    let base = h.base.clone();

    c.goto(&format!("{base}/")).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path().ends_with("/login"),
        "the console asks for a login"
    );
    fill(&c, "#token", "wrong").await;
    click(&c, "#login").await;
    // Each click posts the form; wait for the answering page.
    settle_on(&c, ".err", |e| async move {
        e.text().await.is_ok_and(|t| t.contains("not valid"))
    })
    .await;
    fill(&c, "#token", ADMIN).await;
    shot(&c, "login").await;
    click(&c, "#login").await;
    settle_on(&c, "h1", |e| async move {
        e.text().await.is_ok_and(|t| t.contains("Dashboard"))
    })
    .await;

    // A run from the Run page, watched to the end on its page.
    c.goto(&format!("{base}/run")).await.unwrap();
    click(&c, "#what-all").await;
    shot(&c, "run").await;
    click(&c, "#start").await;
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/executions/"));
    wait_text(&c, "#status", |s| s == "COMPLETED").await;
    shot(&c, "execution").await;

    // A second, long run, stopped from its page.
    c.goto(&format!("{base}/run")).await.unwrap();
    click(&c, "#what-all").await;
    click(&c, "input[name=force]").await;
    c.execute("document.querySelector('details').open = true", vec![])
        .await
        .unwrap();
    fill(&c, "#partitions", "16").await;
    fill(&c, "#pause_ms", "500").await;
    click(&c, "#start").await;
    wait_text(&c, "#status", |s| s == "RUNNING").await;
    shot(&c, "execution-running").await;
    click(&c, "#stop").await;
    wait_text(&c, "#status", |s| s == "STOPPED").await;
    shot(&c, "execution-stopped").await;

    // The monthly top 5, then a creator's month with its videos.
    c.goto(&format!("{base}/settlements?period=month"))
        .await
        .unwrap();
    assert!(text(&c, "h2").await.contains("month of 2024-07-01: top 5"));
    let bars = c.find_all(Locator::Css("svg rect")).await.unwrap();
    assert_eq!(bars.len(), 10, "5 bars by views and 5 by watch time");
    shot(&c, "settlements").await;
    click(&c, "table:last-of-type a").await;
    assert!(text(&c, "main").await.contains("videos"));
    shot(&c, "creator-month").await;

    // Edit a schedule, then pause it and see what resuming would run.
    c.goto(&format!("{base}/schedules")).await.unwrap();
    fill(&c, "#cron-1", "0 30 1 * * *").await;
    click(&c, "#save-1").await;
    // The post answers with the schedules page again. Until it arrives the
    // old page (or a stale element of it) may answer: poll without
    // reloading, which would post the form again.
    settle_on(&c, "#cron-1", |e| async move {
        e.prop("value").await.ok().flatten().as_deref() == Some("0 30 1 * * *")
    })
    .await;
    click(&c, "#toggle-1").await;
    settle_on(&c, "#schedule-1", |e| async move {
        e.text()
            .await
            .is_ok_and(|t| t.contains("Resuming now would settle"))
    })
    .await;
    shot(&c, "schedules").await;

    for (path, name) in [
        ("/", "dashboard"),
        ("/executions", "executions"),
        ("/audit", "audit"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        shot(&c, name).await;
    }
    assert!(
        text(&c, "main").await.contains("console: edit schedule 1"),
        "the console's changes are audited"
    );
    c.close().await.unwrap();
    h.finish().await;
}

fn tempdir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
