//! Command-line parsing, planning, and whole commands against a fake admin
//! API (a bare HTTP/1.1 responder on a local port).

use super::*;
use crate::cmd::{plan, Call};
use crate::render::{Kind, Show};
use clap::{CommandFactory, Parser};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(name = "admin")]
struct Cli {
    #[command(flatten)]
    args: AdminArgs,
}

fn parse(argv: &[&str]) -> AdminArgs {
    let mut full = vec!["admin"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full) {
        Ok(cli) => cli.args,
        Err(e) => panic!("{argv:?} does not parse: {e}"),
    }
}

fn parse_err(argv: &[&str]) -> String {
    let mut full = vec!["admin"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full) {
        Ok(cli) => panic!("{argv:?} parsed: {:?}", cli.args),
        Err(e) => e.to_string(),
    }
}

fn planned(argv: &[&str]) -> Call {
    plan(&parse(argv).command).unwrap()
}

#[test]
fn command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_options_anywhere() {
    let a = parse(&[
        "--url",
        "http://h:1",
        "products",
        "list",
        "--json",
        "--token",
        "t",
    ]);
    assert_eq!(a.options.url, "http://h:1");
    assert_eq!(a.options.token.as_deref(), Some("t"));
    assert!(a.options.json);
}

#[test]
fn lists_with_paging_and_filters() {
    let c = planned(&["plans", "list", "--product", "shop", "--limit", "10"]);
    assert_eq!(c.method, Method::GET);
    assert_eq!(c.path, ["plans"]);
    assert_eq!(
        c.query,
        [("product", "shop".to_string()), ("limit", "10".to_string())]
    );
    assert_eq!(c.show, Show::List(Kind::Plans));
    let c = planned(&[
        "subscriptions",
        "list",
        "--app",
        "web",
        "--state",
        "pending",
        "--all",
    ]);
    assert_eq!(
        c.query,
        [("app", "web".to_string()), ("state", "pending".to_string())]
    );
    assert!(c.all);
    let c = planned(&[
        "keys",
        "list",
        "--subscription",
        "sub_1",
        "--after",
        "key_3",
    ]);
    assert_eq!(
        c.query,
        [
            ("subscription", "sub_1".to_string()),
            ("after", "key_3".to_string())
        ]
    );
    let c = planned(&["audit", "list", "--after", "17"]);
    assert_eq!(c.path, ["audit"]);
    assert_eq!(c.query, [("after", "17".to_string())]);

    assert!(parse_err(&["products", "list", "--limit", "0"]).contains("--limit"));
    assert!(parse_err(&["products", "list", "--limit", "501"]).contains("--limit"));
    assert!(parse_err(&["products", "list", "--product", "x"]).contains("--product"));
    assert!(parse_err(&["subscriptions", "list", "--state", "gone"]).contains("pending"));
    assert!(parse_err(&["keys", "list", "--all", "--after", "k"]).contains("--after"));
}

#[test]
fn crud_calls() {
    let c = planned(&[
        "plans",
        "create",
        "id=gold",
        "product=shop",
        r#"rate_limits:=[{"requests":10,"per":"second"}]"#,
        "--data",
        r#"{"approval":"moderated"}"#,
    ]);
    assert_eq!(
        (c.method.clone(), c.path.clone()),
        (Method::POST, vec!["plans".to_string()])
    );
    assert_eq!(
        c.body,
        Some(
            json!({"id": "gold", "product": "shop", "approval": "moderated",
                    "rate_limits": [{"requests": 10, "per": "second"}]})
        )
    );
    assert_eq!(c.show, Show::Object(Kind::Plans));

    let c = planned(&["products", "update", "shop", "published:=true"]);
    assert_eq!(c.method, Method::PATCH);
    assert_eq!(c.path, ["products", "shop"]);
    assert_eq!(c.body, Some(json!({"published": true})));

    let c = planned(&["consumers", "delete", "acme"]);
    assert_eq!((c.method.clone(), c.body.clone()), (Method::DELETE, None));
    assert_eq!(
        c.show,
        Show::Deleted {
            kind: Kind::Consumers,
            id: "acme".into()
        }
    );

    let c = planned(&["apps", "get", "web"]);
    assert_eq!(
        (c.method.clone(), c.path.clone()),
        (Method::GET, vec!["apps".into(), "web".into()])
    );

    // An update without fields is refused before any request.
    let e = plan(&parse(&["products", "update", "shop"]).command).unwrap_err();
    assert!(e.to_string().starts_with("nothing to update"), "{e}");
    let e = plan(&parse(&["products", "create", "name"]).command).unwrap_err();
    assert!(e.to_string().contains("expected FIELD=VALUE"), "{e}");
}

#[test]
fn secret_calls() {
    let c = planned(&["users", "create", "id=ops", "role=api-manager"]);
    assert_eq!(
        c.show,
        Show::Secret {
            kind: Kind::Users,
            object: "user",
            secret: "token"
        }
    );
    let c = planned(&["users", "token", "ops"]);
    assert_eq!(
        (c.method.clone(), c.path.clone()),
        (
            Method::POST,
            vec!["users".into(), "ops".into(), "token".into()]
        )
    );
    assert_eq!(c.body, None);
    let c = planned(&["keys", "create", "app=web", "plan=gold"]);
    assert!(matches!(
        c.show,
        Show::Secret {
            secret: "secret",
            ..
        }
    ));
    let c = planned(&["keys", "rotate", "key_1", "--overlap", "3600"]);
    assert_eq!(c.path, ["keys", "key_1", "rotate"]);
    assert_eq!(c.body, Some(json!({"overlap_seconds": 3600})));
    assert_eq!(planned(&["keys", "rotate", "key_1"]).body, Some(json!({})));
    assert!(parse_err(&["keys", "rotate", "k", "--overlap", "2592001"]).contains("--overlap"));
    let c = planned(&["keys", "revoke", "key_1"]);
    assert_eq!(
        (c.method.clone(), c.show.clone()),
        (Method::POST, Show::Object(Kind::Keys))
    );
}

#[test]
fn subscription_moves() {
    for (verb, state) in [
        ("approve", "active"),
        ("reject", "rejected"),
        ("suspend", "suspended"),
        ("resume", "active"),
    ] {
        let c = planned(&["subscriptions", verb, "sub_1"]);
        assert_eq!(c.method, Method::PATCH);
        assert_eq!(c.path, ["subscriptions", "sub_1"]);
        assert_eq!(c.body, Some(json!({ "state": state })), "{verb}");
    }
}

#[test]
fn other_calls() {
    let c = planned(&["whoami"]);
    assert_eq!(c.path, ["whoami"]);
    assert!(c.auth);
    let c = planned(&["openapi"]);
    assert_eq!(c.path, ["openapi.json"]);
    assert!(!c.auth);
    assert_eq!(c.show, Show::Raw);
    let c = planned(&["apis", "chain", "get", "pets"]);
    assert_eq!(c.path, ["apis", "pets", "chain"]);
    assert!(parse_err(&["audit", "get", "1"]).contains("unrecognized subcommand"));
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-admin-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn chain_set_reads_toml() {
    let path = temp_file(
        "chain.toml",
        "[[api.chain]]\nplugin = \"key-auth\"\nfail-open = true\n[api.chain.config]\nheader = \"x-api-key\"\n",
    );
    let c = planned(&[
        "apis",
        "chain",
        "set",
        "pets",
        "--file",
        path.to_str().unwrap(),
        "--if-match",
        "\"e1\"",
    ]);
    assert_eq!(c.method, Method::PUT);
    assert_eq!(c.path, ["apis", "pets", "chain"]);
    assert_eq!(c.if_match.as_deref(), Some("\"e1\""));
    assert_eq!(
        c.body,
        Some(
            json!({"chain": [{"plugin": "key-auth", "fail_open": true, "config": {"header": "x-api-key"}}]})
        )
    );
    let e = plan(&parse(&["apis", "chain", "set", "pets", "-f", "/nonexistent.toml"]).command)
        .unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn base_urls() {
    let u = |s: &str| {
        client::base_url(s)
            .map(|u| u.to_string())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        u("http://127.0.0.1:8001").unwrap(),
        "http://127.0.0.1:8001/"
    );
    assert_eq!(u("127.0.0.1:8001").unwrap(), "http://127.0.0.1:8001/");
    assert_eq!(
        u("https://admin.example.com/admin/v1/").unwrap(),
        "https://admin.example.com/"
    );
    assert_eq!(
        u("https://example.com/gw/").unwrap(),
        "https://example.com/gw"
    );
    assert!(u("ftp://x").unwrap_err().contains("http:// or https://"));
    assert!(u("http://x/?a=1").unwrap_err().contains("base URL only"));
    assert!(u("http://").unwrap_err().contains("is not a URL"));
}

#[test]
fn urls_of_calls() {
    let client = client::Client::new("http://127.0.0.1:8001/gw", None, None).unwrap();
    let c = planned(&["plans", "list", "--product", "a b&c", "--limit", "5"]);
    assert_eq!(
        client.url(&c, None).as_str(),
        "http://127.0.0.1:8001/gw/admin/v1/plans?product=a+b%26c&limit=5"
    );
    let c = planned(&["keys", "list", "--after", "k1", "--limit", "5"]);
    assert_eq!(
        client.url(&c, Some("k9")).as_str(),
        "http://127.0.0.1:8001/gw/admin/v1/keys?limit=5&after=k9"
    );
    // Ids are path segments, never path syntax.
    let c = planned(&["apps", "get", "../users"]);
    assert_eq!(
        client.url(&c, None).as_str(),
        "http://127.0.0.1:8001/gw/admin/v1/apps/..%2Fusers"
    );
}

// ---------------------------------------------------------------------------
// Against a fake admin API

/// One request as the fake API saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// Serve `answers` (status, body) in order, one connection each; the
/// handle yields the requests seen.
async fn fake_api(
    answers: Vec<(u16, &'static str)>,
) -> (String, tokio::task::JoinHandle<Vec<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, answer) in answers {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            let mut request_line = lines.next().unwrap().split(' ');
            let method = request_line.next().unwrap().to_string();
            let target = request_line.next().unwrap().to_string();
            let headers: Vec<(String, String)> = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap();
                    (k.trim().to_string(), v.trim().to_string())
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
            seen.push(Seen {
                method,
                target,
                headers,
                body,
            });
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
        }
        seen
    });
    (url, handle)
}

fn args_for(url: &str, argv: &[&str]) -> AdminArgs {
    let mut full = vec!["--url", url, "--token", "tga_test"];
    full.extend_from_slice(argv);
    parse(&full)
}

#[tokio::test]
async fn list_all_pages() {
    let (url, server) = fake_api(vec![
        (
            200,
            r#"{"items":[{"id":"a","name":"A","email":"a@x"}],"next":"a"}"#,
        ),
        (
            200,
            r#"{"items":[{"id":"b","name":"B","email":null}],"next":null}"#,
        ),
    ])
    .await;
    let out = execute(&args_for(
        &url,
        &["consumers", "list", "--limit", "1", "--all"],
    ))
    .await
    .unwrap();
    assert_eq!(
        out.stdout(),
        "ID  NAME  EMAIL\na   A     a@x\nb   B     -\n"
    );
    assert_eq!(out.stderr(), "");
    let seen = server.await.unwrap();
    assert_eq!(seen[0].target, "/admin/v1/consumers?limit=1");
    assert_eq!(seen[1].target, "/admin/v1/consumers?limit=1&after=a");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].header("authorization"), Some("Bearer tga_test"));
}

#[tokio::test]
async fn list_all_as_json() {
    let (url, server) = fake_api(vec![
        (200, r#"{"items":[{"seq":1}],"next":1}"#),
        (200, r#"{"items":[{"seq":2}],"next":null}"#),
    ])
    .await;
    let out = execute(&args_for(&url, &["--json", "audit", "list", "--all"]))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v, json!({"items": [{"seq": 1}, {"seq": 2}], "next": null}));
    assert_eq!(server.await.unwrap()[1].target, "/admin/v1/audit?after=1");
}

#[tokio::test]
async fn create_sends_json() {
    let (url, server) = fake_api(vec![(
        201,
        r#"{"id":"shop","name":"Shop","description":"","apis":["pets"],"published":false,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#,
    )])
    .await;
    let out = execute(&args_for(
        &url,
        &[
            "products",
            "create",
            "id=shop",
            "name=Shop",
            r#"apis:=["pets"]"#,
        ],
    ))
    .await
    .unwrap();
    assert!(
        out.stdout()
            .starts_with("id           shop\nname         Shop\n"),
        "{}",
        out.stdout()
    );
    let seen = server.await.unwrap();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/admin/v1/products");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].json(),
        json!({"id": "shop", "name": "Shop", "apis": ["pets"]})
    );
}

#[tokio::test]
async fn api_errors_are_reported() {
    let (url, _server) = fake_api(vec![(
        400,
        r#"{"error":{"status":400,"code":"invalid","message":"`per` must be second, minute, hour or day","field":"rate_limits[0].per"}}"#,
    )])
    .await;
    let e = execute(&args_for(
        &url,
        &[
            "plans",
            "update",
            "gold",
            r#"rate_limits:=[{"requests":1,"per":"week"}]"#,
        ],
    ))
    .await
    .unwrap_err();
    assert_eq!(
        error::report(&e),
        "error: `per` must be second, minute, hour or day (field: rate_limits[0].per)"
    );
}

#[tokio::test]
async fn key_create_prints_the_secret_alone() {
    let (url, _server) = fake_api(vec![(
        201,
        r#"{"key":{"id":"key_1","subscription":"sub_1","app":"web","plan":"gold","name":null,"prefix":"tg_Ab3d","created_at":"2026-01-01T00:00:00Z","expires_at":null,"revoked_at":null,"rotated_to":null},"secret":"tg_Ab3dSECRET"}"#,
    )])
    .await;
    let out = execute(&args_for(&url, &["keys", "create", "app=web", "plan=gold"]))
        .await
        .unwrap();
    assert_eq!(out.stdout(), "tg_Ab3dSECRET\n");
    assert!(out.stderr().contains("shown only this once"));
}

#[tokio::test]
async fn delete_and_chain_set_headers() {
    let (url, server) = fake_api(vec![
        (204, ""),
        (200, r#"{"etag":"\"e2\"","chain":[],"generation":3}"#),
    ])
    .await;
    let out = execute(&args_for(&url, &["plans", "delete", "gold"]))
        .await
        .unwrap();
    assert_eq!(out.stdout(), "deleted plan `gold`\n");
    let path = temp_file("empty.json", r#"{"chain":[]}"#);
    let out = execute(&args_for(
        &url,
        &[
            "apis",
            "chain",
            "set",
            "pets",
            "--file",
            path.to_str().unwrap(),
            "--if-match",
            "\"e1\"",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(
        out.stdout(),
        "chain of api `pets` set: 0 step(s), generation 3, etag \"e2\"\n"
    );
    let seen = server.await.unwrap();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("DELETE", "/admin/v1/plans/gold")
    );
    assert_eq!(seen[1].method, "PUT");
    assert_eq!(seen[1].header("if-match"), Some("\"e1\""));
    assert_eq!(seen[1].json(), json!({"chain": []}));
}

#[tokio::test]
async fn openapi_needs_no_token() {
    let (url, server) = fake_api(vec![(200, r#"{"openapi":"3.1.0"}"#)]).await;
    let mut args = parse(&["--url", &url, "openapi"]);
    args.options.token = None;
    let out = execute(&args).await.unwrap();
    assert_eq!(out.stdout(), "{\n  \"openapi\": \"3.1.0\"\n}\n");
    let seen = server.await.unwrap();
    assert_eq!(seen[0].target, "/admin/v1/openapi.json");
    assert_eq!(seen[0].header("authorization"), None);
}

#[tokio::test]
async fn missing_token_fails_before_connecting() {
    let mut args = parse(&["--url", "http://127.0.0.1:9", "whoami"]);
    args.options.token = None;
    let e = execute(&args).await.unwrap_err();
    assert!(matches!(e, Error::NoToken), "{e:?}");
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    // A port that was just free.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let e = execute(&args_for(&url, &["whoami"])).await.unwrap_err();
    let text = error::report(&e);
    assert!(
        text.starts_with(&format!(
            "error: cannot reach the admin API at {url}/admin/v1/whoami: "
        )),
        "{text}"
    );
    assert!(text.contains("`[admin] address`"), "{text}");
    // The cause itself, not reqwest's wrappers around it.
    assert!(!text.contains("error sending request"), "{text}");
    assert!(!text.contains("client error"), "{text}");
}

#[tokio::test]
async fn non_json_success_is_an_error() {
    let (url, _server) = fake_api(vec![(200, "<html>hello</html>")]).await;
    let e = execute(&args_for(&url, &["whoami"])).await.unwrap_err();
    assert!(matches!(e, Error::NotJson { status: 200, .. }), "{e:?}");
}

#[test]
fn analytics_commands_plan_their_queries() {
    let c = planned(&[
        "analytics",
        "report",
        "--from",
        "-7d",
        "--by",
        "api,status",
        "--status",
        "5xx",
        "--limit",
        "20",
    ]);
    assert_eq!(c.path, ["analytics", "report"]);
    assert_eq!(
        c.query,
        [
            ("from", "-7d".to_string()),
            ("by", "api,status".to_string()),
            ("status", "5xx".to_string()),
            ("limit", "20".to_string()),
        ]
    );
    assert_eq!(c.show, Show::Report { consumer: None });
    assert!(!c.text);
    let c = planned(&["analytics", "top", "--from", "-30d", "--csv"]);
    assert_eq!(c.path, ["analytics", "top-consumers"]);
    assert!(c.query.contains(&("format", "csv".to_string())));
    assert!(c.text);
    assert_eq!(c.show, Show::Text);
    let c = planned(&["analytics", "consumer", "alice", "--interval", "hour"]);
    assert_eq!(c.path, ["analytics", "consumers", "alice"]);
    assert_eq!(c.query, [("interval", "hour".to_string())]);
    assert!(parse_err(&["analytics", "report", "--interval", "week"]).contains("week"));
    assert!(parse_err(&["analytics", "top", "--by", "api"]).contains("--by"));
}

#[test]
fn analytics_reports_print_as_tables() {
    let answer = json!({
        "from": "2027-01-01T00:00:00Z", "to": "2027-01-02T00:00:00Z",
        "interval": null, "by": ["consumer"], "truncated": 3,
        "totals": {"calls": 12, "errors": 2, "errors_4xx": 1, "errors_5xx": 1,
                   "latency_us": {"p50": 1500, "p99": 150_000}},
        "rows": [
            {"consumer": "alice", "calls": 10, "errors": 1, "errors_4xx": 0, "errors_5xx": 1,
             "bytes_in": 0, "bytes_out": 100,
             "latency_us": {"p50": 1500, "p95": 2000, "p99": 150_000},
             "upstream_latency_us": null},
            {"consumer": "", "calls": 2, "errors": 1, "errors_4xx": 1, "errors_5xx": 0,
             "bytes_in": 0, "bytes_out": 0, "latency_us": {"p50": 300, "p95": 300, "p99": 300},
             "upstream_latency_us": null},
        ],
    });
    let o = render::render(&Show::Report { consumer: None }, &answer, false);
    let out = o.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CONSUMER  CALLS  ERRORS"), "{out}");
    assert!(
        lines[1].starts_with("alice") && lines[1].contains("150.0"),
        "{out}"
    );
    assert!(lines[2].starts_with("-"), "{out}");
    let err = o.stderr();
    assert!(
        err.contains("12 calls, 2 errors (4xx 1, 5xx 1), p50 1.5 ms, p99 150.0 ms"),
        "{err}"
    );
    assert!(err.contains("3 more row(s)"), "{err}");
    let mut one = answer.clone();
    one["totals"]["calls"] = json!(1);
    one["totals"]["errors"] = json!(1);
    let o = render::render(&Show::Report { consumer: None }, &one, false);
    assert!(
        o.stderr().contains(": 1 call, 1 error (4xx"),
        "{}",
        o.stderr()
    );
    // CSV comes through as it is, with or without --json.
    let csv = Value::String("consumer,calls\r\nalice,10\r\n".into());
    for json in [false, true] {
        assert_eq!(
            render::render(&Show::Text, &csv, json).stdout(),
            "consumer,calls\r\nalice,10\r\n"
        );
    }
}

#[test]
fn lifecycle_revisions_and_version_sets_plan_their_calls() {
    let c = planned(&[
        "apis",
        "lifecycle",
        "pets-v1",
        "--state",
        "deprecated",
        "--sunset",
        "2027-01-01T00:00:00Z",
        "--successor",
        "pets-v2",
        "--if-match",
        "abc",
    ]);
    assert_eq!(c.method, Method::PUT);
    assert_eq!(c.path, ["apis", "pets-v1", "lifecycle"]);
    assert_eq!(
        c.body,
        Some(
            json!({"state": "deprecated", "sunset": "2027-01-01T00:00:00Z", "successor": "pets-v2"})
        )
    );
    assert_eq!(c.if_match.as_deref(), Some("abc"));
    let c = planned(&[
        "apis",
        "revisions",
        "create",
        "pets",
        "--description",
        "new auth",
    ]);
    assert_eq!(
        (c.method.clone(), c.path.clone()),
        (
            Method::POST,
            vec!["apis".to_string(), "pets".into(), "revisions".into()]
        )
    );
    assert_eq!(c.body, Some(json!({"description": "new auth"})));
    let c = planned(&["apis", "revisions", "promote", "pets", "2"]);
    assert_eq!(c.path, ["apis", "pets", "revisions", "2", "promote"]);
    let c = planned(&["apis", "revisions", "rollback", "pets"]);
    assert_eq!(
        (c.method, c.path),
        (
            Method::POST,
            vec!["apis".to_string(), "pets".into(), "rollback".into()]
        )
    );
    let c = planned(&["apis", "revisions", "delete", "pets", "3"]);
    assert_eq!(c.method, Method::DELETE);
    let c = planned(&["version-sets", "get", "pets"]);
    assert_eq!(c.path, ["version-sets", "pets"]);
    assert!(parse_err(&["apis", "revisions", "promote", "pets", "two"]).contains("invalid value"));
}

#[test]
fn apis_are_created_replaced_deleted_and_exported() {
    let c = planned(&[
        "apis",
        "create",
        "name=orders",
        r#"upstream:={"targets":["http://10.0.0.5:8080"]}"#,
        r#"routes:=[{"prefix":"/orders"}]"#,
    ]);
    assert_eq!(
        (c.method.as_str(), c.path.clone()),
        ("POST", vec!["apis".to_string()])
    );
    assert_eq!(c.body.as_ref().unwrap()["routes"][0]["prefix"], "/orders");
    let c = planned(&[
        "apis",
        "replace",
        "orders",
        "--if-match",
        "abc",
        r#"upstream:={"targets":["http://x"]}"#,
    ]);
    assert_eq!(
        (c.method.as_str(), c.path.clone()),
        ("PUT", vec!["apis".to_string(), "orders".to_string()])
    );
    assert_eq!(c.if_match.as_deref(), Some("abc"));
    let c = planned(&["apis", "delete", "orders"]);
    assert_eq!(c.method.as_str(), "DELETE");
    let c = planned(&["apis", "openapi", "orders"]);
    assert_eq!(c.path, ["apis", "orders", "openapi"]);
}

#[test]
fn portal_accounts_are_listed_and_approved() {
    let c = planned(&["accounts", "list", "--state", "pending"]);
    assert_eq!(
        (c.method.clone(), c.path.clone()),
        (Method::GET, vec!["accounts".to_string()])
    );
    assert_eq!(c.query, [("state", "pending".to_string())]);
    assert_eq!(c.show, Show::List(Kind::Accounts));
    for verb in ["approve", "disable", "enable"] {
        let c = planned(&["accounts", verb, "acct_0123456789abcdef"]);
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.path, ["accounts", "acct_0123456789abcdef", verb]);
        assert_eq!(c.show, Show::Object(Kind::Accounts));
    }
    assert!(parse_err(&["accounts", "list", "--state", "gone"]).contains("pending"));
}

#[test]
fn groups_members_and_product_visibility() {
    let c = planned(&["groups", "create", "id=partners", "name=Partners"]);
    assert_eq!(
        (c.method.clone(), c.path.clone()),
        (Method::POST, vec!["groups".to_string()])
    );
    assert_eq!(c.body.as_ref().unwrap()["name"], "Partners");
    let c = planned(&["groups", "list", "--all"]);
    assert_eq!(c.show, Show::List(Kind::Groups));
    let c = planned(&["groups", "add-member", "partners", "alice"]);
    assert_eq!(c.method, Method::PUT);
    assert_eq!(c.path, ["groups", "partners", "members", "alice"]);
    let c = planned(&["groups", "remove-member", "partners", "alice"]);
    assert_eq!(c.method, Method::DELETE);
    let c = planned(&["groups", "members", "partners"]);
    assert_eq!(c.path, ["groups", "partners", "members"]);
    let c = planned(&[
        "products",
        "list",
        "--consumer",
        "alice",
        "--access",
        "anonymous",
    ]);
    assert_eq!(
        c.query,
        [
            ("consumer", "alice".to_string()),
            ("access", "anonymous".to_string())
        ]
    );
    assert!(parse_err(&["products", "list", "--access", "open"]).contains("authenticated"));
    let c = planned(&[
        "products",
        "update",
        "shop",
        "access=authenticated",
        r#"visible_to:=["partners"]"#,
    ]);
    assert_eq!(
        c.body.as_ref().unwrap()["visible_to"],
        serde_json::json!(["partners"])
    );
}

#[test]
fn subscription_keys_are_shown_once_and_regenerated() {
    let c = planned(&["subscriptions", "create", "app=web", "plan=gold"]);
    assert_eq!(c.show, Show::SubscriptionCreated);
    let answer = serde_json::json!({"id": "sub_1", "app": "web", "plan": "gold", "state": "active",
        "secrets": {"primary": "tg_P", "secondary": "tg_S"}});
    let o = crate::render::render(&c.show, &answer, false);
    assert_eq!(o.stdout(), "primary tg_P\nsecondary tg_S\n");
    assert!(!o.stderr().contains("tg_P"), "{}", o.stderr());
    let c = planned(&["subscriptions", "regenerate-key", "sub_1", "secondary"]);
    assert_eq!(c.method, Method::POST);
    assert_eq!(
        c.path,
        ["subscriptions", "sub_1", "keys", "secondary", "regenerate"]
    );
    assert!(parse_err(&["subscriptions", "regenerate-key", "sub_1", "third"]).contains("primary"));
}
