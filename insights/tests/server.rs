//! The insights service over real HTTP on loopback, on PostgreSQL as the reader role and
//! on SQLite: 401 on every route without the token; the login cookie's flags; learner
//! input rendered as text; `GET /api/answers` pages through every awkward answer
//! exactly once; wrong tokens are limited per client and globally (429, Retry-After)
//! while a signed-in session keeps working; and in real Chromium, the numbers and bar labels shown equal counts
//! taken from the database, and an answer holding a script runs nothing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use hourofci_collector::event::{NewEvent, Table};
use hourofci_insights::server::{router, AppState, LoginLimits};
use hourofci_insights::source::Source;
use uuid::Uuid;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Service {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(target: &str) -> Service {
    serve_with_limits(target, LoginLimits::default()).await
}

async fn serve_with_limits(target: &str, limits: LoginLimits) -> Service {
    let source = Source::open_read(target, 3).await.expect("open the store");
    let app = router(AppState::with_login_limits(source, TOKEN, limits).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    Service { url, task }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

const SECRET_ANSWER: &str = "only-visible-with-the-token";
const SCRIPT_ANSWER: &str = "<script>document.title='pwned';window.__xss=1</script>";
const ATTRIBUTE_ANSWER: &str = "\"><img src=x onerror=\"window.__xss=2\">";

/// Known answers to question 1A (and a few to 2B), with learner ids on some rows.
fn answers() -> Vec<NewEvent> {
    let alice = Some(Uuid::new_v4());
    let bob = Some(Uuid::new_v4());
    let mut events = Vec::new();
    let mut add = |answer: &str, n: usize, learner: Option<Uuid>, ua: &str, question: &str| {
        for _ in 0..n {
            events.push(event(Table::Production, ua, question, answer, learner));
        }
    };
    add("blue", 5, alice, "ua-1", "1A");
    add("  blue ", 1, bob, "ua-1", "1A");
    add("red", 3, None, "ua-2", "1A");
    add(SCRIPT_ANSWER, 2, None, "ua-3", "1A");
    add(ATTRIBUTE_ANSWER, 1, None, "ua-3", "1A");
    add("{\"event\":\"click\",\"x\":1}", 2, bob, "ua-1", "1A");
    for i in 0..11 {
        add(&format!("rare answer {i}"), 1, None, "ua-4", "1A");
    }
    add(SECRET_ANSWER, 1, alice, "ua-1", "2B");
    add("line one\nline two, \"quoted\" 😀 \u{202E}rtl", 1, None, "ua-5", "2B");
    events
}

#[tokio::test]
async fn every_route_answers_401_without_the_token_and_the_login_sets_a_strict_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    write_sqlite(&path, &answers()).await;
    let service = serve(path.to_str().unwrap()).await;
    let http = client();
    let routes = [
        "/",
        "/overview.csv",
        "/question?lesson=gateway&level=beginner&question=2B",
        "/question.csv?question=2B",
        "/api/answers",
        "/no-such-page",
    ];
    for route in routes {
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789abcdef"),
            Some("Bearer "),
            Some(TOKEN),
        ] {
            let mut req = http.get(format!("{}{route}", service.url));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 401, "{route} with {auth:?}");
            let body = res.text().await.unwrap();
            assert!(
                !body.contains(SECRET_ANSWER) && !body.contains("gateway"),
                "{route}: a 401 shows nothing"
            );
        }
        let res = http
            .get(format!("{}{route}", service.url))
            .header("Cookie", "hourofci_insights=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{route} with a forged session");
        let res = http.post(format!("{}{route}", service.url)).send().await.unwrap();
        assert_eq!(res.status(), 401, "POST {route}");
    }
    let res = http
        .post(format!("{}/login", service.url))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none());

    let res = http
        .post(format!("{}/login", service.url))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "the cookie is a session, not the token");
    let session = cookie.split(';').next().unwrap().to_string();
    for route in routes {
        let res = http
            .get(format!("{}{route}", service.url))
            .header("Cookie", &session)
            .send()
            .await
            .unwrap();
        let expected = if route == "/no-such-page" { 404 } else { 200 };
        assert_eq!(res.status(), expected, "{route} with the session");
        let res = http
            .get(format!("{}{route}", service.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected, "{route} with the bearer token");
    }
    let page = http
        .get(format!("{}/question?question=2B", service.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(SECRET_ANSWER));
}

/// A client whose requests come from `127.0.0.{n}`.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .local_address(IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn wrong_tokens_are_limited_per_client_and_globally() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    write_sqlite(&path, &answers()).await;
    // Slow refill, so that nothing comes back while the test runs however loaded the machine.
    let limits = LoginLimits {
        per_client_burst: 5,
        per_client_period: Duration::from_secs(600),
        global_burst: 12,
        global_period: Duration::from_secs(600),
    };
    let service = serve_with_limits(path.to_str().unwrap(), limits).await;
    let login = |http: &reqwest::Client, token: &str| {
        http.post(format!("{}/login", service.url))
            .form(&[("token", token.to_string())])
            .send()
    };
    let get = |http: &reqwest::Client, auth: Option<&str>, cookie: Option<&str>| {
        let mut req = http.get(format!("{}/api/answers?limit=1", service.url));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        req.send()
    };

    // Client A signs in, then tries wrong tokens: five are answered 401, the sixth 429.
    let a = client_from(2);
    let res = login(&a, TOKEN).await.unwrap();
    assert_eq!(res.status(), 303);
    let session = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for i in 0..5 {
        let res = if i % 2 == 0 {
            login(&a, "wrong-token-0123456789").await
        } else {
            get(&a, Some("wrong-token-0123456789"), None).await
        };
        assert_eq!(res.unwrap().status(), 401, "wrong token {i} within the limit");
    }
    let res = login(&a, "wrong-token-0123456789").await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(retry_after(&res) >= 1);
    assert!(!res.headers().contains_key("set-cookie"));
    // Now even the right token is not compared for A (a right guess looks like a wrong one) ...
    let res = login(&a, TOKEN).await.unwrap();
    assert_eq!(res.status(), 429, "the right token is refused while A waits");
    assert!(!res.headers().contains_key("set-cookie"));
    assert_eq!(get(&a, Some(TOKEN), None).await.unwrap().status(), 429);
    // ... but A's session, made before, still works, and no data leaks in a 429.
    let res = get(&a, None, Some(&session)).await.unwrap();
    assert_eq!(res.status(), 200, "a signed-in session is not locked out");
    let res = get(&a, Some(TOKEN), None).await.unwrap();
    assert!(!res.text().await.unwrap().contains("blue"));

    // Client B is not limited by A.
    let b = client_from(3);
    assert_eq!(login(&b, TOKEN).await.unwrap().status(), 303);
    assert_eq!(get(&b, Some(TOKEN), None).await.unwrap().status(), 200);

    // Every client together: 12 wrong tokens (5 from A so far), each client under its own limit.
    let mut wrong = 5;
    let mut refused = None;
    for n in 10..20u8 {
        let c = client_from(n);
        for _ in 0..4 {
            let res = get(&c, Some("another-wrong-token-0123"), None).await.unwrap();
            if res.status() == 429 {
                refused = Some((wrong, retry_after(&res)));
                break;
            }
            assert_eq!(res.status(), 401);
            wrong += 1;
        }
        if refused.is_some() {
            break;
        }
    }
    let (wrong, wait) = refused.expect("the global limit refuses");
    assert_eq!(wrong, 12, "refused after the global allowance");
    assert!(wait >= 1);
    // A new client with the right token now waits too; A's session still works.
    let res = login(&client_from(40), TOKEN).await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(retry_after(&res) >= 1);
    assert_eq!(get(&client_from(41), Some(TOKEN), None).await.unwrap().status(), 429);
    assert_eq!(get(&a, None, Some(&session)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn learner_input_is_text_and_scripts_are_forbidden() {
    let db = fresh_db().await;
    write_pg(&db, &answers()).await;
    let service = serve(&db.reader_url).await;
    let res = client()
        .get(format!(
            "{}/question?lesson=gateway&level=beginner&question=1A",
            service.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let page = res.text().await.unwrap();
    assert!(!page.contains("<script"), "no script element on any page");
    assert!(!page.contains("<img"), "an answer cannot add elements");
    assert!(
        page.contains("&lt;script&gt;document.title="),
        "the answer is shown as text"
    );
    assert!(
        page.contains("&quot;&gt;&lt;img src=x onerror=&quot;"),
        "quotes are escaped in text and attributes"
    );
}

/// Follow `more` from `/api/answers?...` to the end; every row once, in id order.
async fn api_all(service: &Service, first: &str) -> Vec<serde_json::Value> {
    let http = client();
    let mut next = first.to_string();
    let mut rows = Vec::new();
    for _ in 0..100 {
        let page: serde_json::Value = http
            .get(format!("{}{next}", service.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        rows.extend(page["answers"].as_array().unwrap().iter().cloned());
        next = page["more"].as_str().unwrap().to_string();
        if next.is_empty() {
            return rows;
        }
    }
    panic!("more than 100 pages");
}

#[tokio::test]
async fn api_pages_through_every_answer_exactly_once_in_both_stores() {
    let db = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("a.db");
    let events = answers();
    write_pg(&db, &events).await;
    write_sqlite(&sqlite, &events).await;
    for target in [db.reader_url.clone(), sqlite.to_str().unwrap().to_string()] {
        let service = serve(&target).await;
        let rows = api_all(&service, "/api/answers?limit=4").await;
        let got: Vec<&str> = rows.iter().map(|r| r["answer"].as_str().unwrap()).collect();
        let want: Vec<&str> = events.iter().map(|e| e.answer.as_str()).collect();
        assert_eq!(got, want, "{target}: every answer once, byte for byte, in id order");
        let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let only_2b = api_all(&service, "/api/answers?question=2B&limit=1").await;
        assert_eq!(only_2b.len(), 2);
        assert_eq!(only_2b[0]["answer"], SECRET_ANSWER);
        let res = client()
            .get(format!("{}/api/answers?since=yesterday", service.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Reads the pages as a person would, in Chromium, and prints what they show as JSON.
const BROWSER_SCRIPT: &str = r##"
const { createRequire } = require("node:module");
const requireRoot = createRequire(process.env.WORKSPACE_ROOT + "/");
const { chromium } = requireRoot("playwright-core");
(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  const base = process.env.INSIGHTS_URL;
  await page.goto(base + "/");
  const before = await page.textContent("body");
  await page.fill("input[name=token]", process.env.INSIGHTS_TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("#overview");
  const overview = await page.$$eval("#overview tbody tr", (trs) => trs.map((tr) => {
    const td = [...tr.querySelectorAll("td")].map((c) => c.textContent);
    return { lesson: td[0], level: td[1], question: td[2], answers: +td[3], learners: +td[4], user_agents: +td[5] };
  }));
  await page.screenshot({ path: process.env.SHOTS + "/insights-overview.png", fullPage: true });
  await page.click("#overview a:text-is('1A')");
  await page.waitForSelector("#answer-chart");
  const bars = await page.$$eval("#answer-chart g.bar", (gs) => gs.map((g) => ({
    label: g.querySelector("text.bar-label").textContent, count: +g.querySelector("text.bar-count").textContent })));
  const total = +(await page.textContent("#total"));
  const interactions = +(await page.textContent("#interactions"));
  const listed = await page.$$eval("#answers tbody td.answer", (tds) => tds.map((td) => td.textContent));
  const days = await page.$$eval("#timeline g.day", (gs) => gs.map((g) => +g.dataset.count));
  const xss = await page.evaluate(() => window.__xss ?? null);
  const title = await page.title();
  await page.screenshot({ path: process.env.SHOTS + "/insights-question.png", fullPage: true });
  await browser.close();
  console.log(JSON.stringify({ before, overview, bars, total, interactions, listed, days, xss, title, dialogs }));
})().catch((e) => { console.error(e); process.exit(1); });
"##;

#[tokio::test]
async fn chromium_shows_the_database_counts_and_runs_no_learner_script() {
    let root = workspace_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "Chromium is required at {chromium} (set CHROMIUM)"
    );
    assert!(
        root.join("node_modules/playwright-core").exists(),
        "playwright-core is required: npm ci at the workspace root"
    );
    let db = fresh_db().await;
    let events = answers();
    write_pg(&db, &events).await;
    // Two days of answers, for the timeline.
    sqlx::query("UPDATE loggingtable SET received_at = received_at - interval '1 day' WHERE answer = 'red'")
        .execute(&db.admin)
        .await
        .unwrap();
    let service = serve(&db.reader_url).await;
    let shots = root.join("target/insights-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let run = tokio::process::Command::new("node")
        .arg("-e")
        .arg(BROWSER_SCRIPT)
        .env("WORKSPACE_ROOT", &root)
        .env("CHROMIUM", &chromium)
        .env("INSIGHTS_URL", &service.url)
        .env("INSIGHTS_TOKEN", TOKEN)
        .env("SHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser within 3 minutes")
        .expect("node is required");
    assert!(
        out.status.success(),
        "browser script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    assert!(
        !shown["before"].as_str().unwrap().contains("blue"),
        "nothing shown before signing in"
    );
    // The overview's numbers, against counts taken from the database by other SQL.
    let expected: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT lesson, lesson_level, question, count(*), count(DISTINCT learner_id),
                count(DISTINCT user_agent) FILTER (WHERE learner_id IS NULL)
         FROM loggingtable GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let overview: Vec<(String, String, String, i64, i64, i64)> = shown["overview"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            let n = |k: &str| r[k].as_i64().unwrap();
            (
                s("lesson"),
                s("level"),
                s("question"),
                n("answers"),
                n("learners"),
                n("user_agents"),
            )
        })
        .collect();
    assert_eq!(overview, expected);
    assert_eq!(expected.len(), 2);

    // The bars: the most frequent trimmed free-text answers, then "other", from the database.
    let top: Vec<(String, i64)> = sqlx::query_as(
        "SELECT btrim(answer), count(*) FROM loggingtable WHERE question = '1A' AND answer NOT LIKE '{%'
         GROUP BY 1 ORDER BY 2 DESC, btrim(answer) COLLATE \"C\" NULLS FIRST LIMIT 10",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let free_text: i64 =
        sqlx::query_scalar("SELECT count(*) FROM loggingtable WHERE question = '1A' AND answer NOT LIKE '{%'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    let bars: Vec<(String, i64)> = shown["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["label"].as_str().unwrap().to_string(), b["count"].as_i64().unwrap()))
        .collect();
    let shorten = |s: &str| {
        if s.chars().count() > 34 {
            format!("{}…", s.chars().take(34).collect::<String>())
        } else {
            s.to_string()
        }
    };
    let mut want: Vec<(String, i64)> = top.iter().map(|(a, n)| (shorten(a), *n)).collect();
    want.push((
        "(other answers)".to_string(),
        free_text - top.iter().map(|(_, n)| n).sum::<i64>(),
    ));
    assert_eq!(bars, want);
    assert_eq!(bars[0], ("blue".to_string(), 6), "trimmed answers count together");

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM loggingtable WHERE question = '1A'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(shown["total"].as_i64().unwrap(), total);
    assert_eq!(shown["interactions"].as_i64().unwrap(), 2);
    let days: Vec<i64> = shown["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect();
    assert_eq!(days.len(), 2, "two days of answers");
    assert_eq!(days.iter().sum::<i64>(), total);
    let listed: Vec<&str> = shown["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(listed.len() as i64, total, "every answer listed (fewer than one page)");
    assert!(
        listed.contains(&SCRIPT_ANSWER) && listed.contains(&ATTRIBUTE_ANSWER),
        "shown as text, exactly"
    );
    assert_eq!(shown["xss"], serde_json::Value::Null, "no learner script ran");
    assert!(!shown["title"].as_str().unwrap().contains("pwned"));
    assert_eq!(shown["dialogs"].as_array().unwrap().len(), 0);
    assert!(shots.join("insights-question.png").exists());
}
