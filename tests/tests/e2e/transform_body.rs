//! transform on bodies end to end: JSON field edits, JSON<->XML, size caps.

use tollgate_tests::*;

const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// A gateway whose one step edits JSON request bodies (64KiB at most) and
/// turns JSON responses into XML.
async fn json_gateway(up: &Upstream) -> TestGateway {
    let chain = r#"
[[api.chain]]
plugin = "transform"
[api.chain.config.request.body]
max-bytes = "64KiB"
json.set = { "/meta/source" = "gateway", "/version" = 2 }
json.remove = ["/password", "/items/0/secret"]
json.rename = { "/user_name" = "/userName" }
[api.chain.config.response.body]
convert = "json-to-xml"
xml.root = "echo"
"#;
    TestGateway::start(&simple_manifest(&up.url(), chain)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_json_edits_reach_the_upstream() {
    let up = Upstream::start().await;
    let gw = json_gateway(&up).await;
    let r = client()
        .post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body(r#"{"user_name":"ann","password":"pw","items":[{"id":1,"secret":"s"},{"id":2}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    let body = std::str::from_utf8(&seen.body).unwrap();
    assert_eq!(
        body,
        r#"{"items":[{"id":1},{"id":2}],"userName":"ann","meta":{"source":"gateway"},"version":2}"#
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    // Framing follows the new body, not the client's content-length.
    if let Some(len) = seen.header("content-length") {
        assert_eq!(len, body.len().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_json_becomes_xml_for_the_client() {
    let up = Upstream::start().await;
    let gw = json_gateway(&up).await;
    let r = client()
        .post(gw.url("/pets?x=1&y=<2>"))
        .header("content-type", "text/plain")
        .body("a & b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/xml");
    let len = r.headers().get("content-length").cloned();
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        format!(
            "{XML_DECLARATION}<echo><body>a &amp; b</body><method>POST</method>\
             <path>/pets?x=1&amp;y=%3C2%3E</path></echo>"
        )
    );
    if let Some(len) = len {
        assert_eq!(len.to_str().unwrap(), body.len().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_pass_through_untouched() {
    let up = Upstream::start().await;
    let gw = json_gateway(&up).await;
    let c = client();
    // JSON is edited (the step is active) ...
    let r = c
        .post(gw.url("/x"))
        .header("content-type", "application/json")
        .body(r#"{"password":"pw"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.last().body,
        r#"{"meta":{"source":"gateway"},"version":2}"#
    );
    // ... but other bodies, and JSON without a JSON content type, are not,
    // byte for byte, invalid UTF-8 included.
    let cases: [(Option<&str>, &[u8]); 4] = [
        (Some("text/plain"), br#"{"password":"pw"}"#),
        (None, br#"{"password":"pw"}"#),
        (
            Some("application/octet-stream"),
            b"\xff\xfe\x00{\"password\":",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"password=pw&user_name=ann",
        ),
    ];
    for (content_type, body) in cases {
        let mut req = c.post(gw.url("/x")).body(body.to_vec());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{content_type:?}");
        let seen = up.last();
        assert_eq!(&seen.body[..], body, "{content_type:?}");
        assert_eq!(seen.header("content-type"), content_type);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_refused_before_the_upstream() {
    let up = Upstream::start().await;
    let gw = json_gateway(&up).await;
    for body in [&b"{\"password\":"[..], b"{\"a\":1,}", b"{\"a\":\"\xff\"}"] {
        let r = client()
            .post(gw.url("/orders"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_json");
        assert_contains(
            v["error"]["message"].as_str().unwrap(),
            "the request body is not valid JSON",
        );
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_bytes_get_413() {
    let up = Upstream::start().await;
    let gw = json_gateway(&up).await;
    let c = client();
    // Exactly 64KiB is within the limit.
    let r = c
        .post(gw.url("/x"))
        .header("content-type", "text/plain")
        .body(vec![b'a'; 64 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 1);
    // One byte more is refused by the host, JSON or not, and never sent on.
    for ct in ["text/plain", "application/json"] {
        let r = c
            .post(gw.url("/x"))
            .header("content-type", ct)
            .body(vec![b' '; (64 << 10) + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{ct}");
    }
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_requests_become_json_and_hostile_xml_is_refused() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "transform"
[api.chain.config.request.body]
convert = "xml-to-json"
json.rename = { "/order/@id" = "/order/id" }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let c = client();
    let r = c
        .post(gw.url("/orders"))
        .header("content-type", "application/xml")
        .body(r#"<?xml version="1.0"?><order id="7"><item>a</item><item>b</item><note/></order>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        r#"{"order":{"item":["a","b"],"note":null,"id":"7"}}"#
    );
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"#;
    for bad in [laughs.to_string(), "<a>".repeat(100)] {
        let r = c
            .post(gw.url("/orders"))
            .header("content-type", "text/xml")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_xml");
    }
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_that_do_not_parse_are_passed_on() {
    let up = Upstream::start().await;
    let gw = json_gateway(&up).await;
    // `/big/N` answers N bytes of `x` labelled application/json.
    let r = client().get(gw.url("/big/100")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), "x".repeat(100));
    // Over the response limit (1MiB by default): 502.
    let r = client().get(gw.url("/big/2000000")).send().await.unwrap();
    assert_eq!(r.status(), 502);
}

/// Full-size bodies fit the default step memory (16MiB): the worst case for
/// JSON edits (an array of half a million numbers on the edit path) and the
/// XML node limit. The deadline is raised: inside Wasm the worst case takes
/// longer than the default 50ms (see the plugin's README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_fit_the_default_memory() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "transform"
[api.chain.config.request.body]
json.remove = ["/0"]
json.set = { "/-" = 1 }
convert = "xml-to-json"
"#;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .limits(r#"step-timeout = "10s""#)
        .start()
        .await;
    let c = client();
    // Just under 1MiB of zeros: 524,287 array elements.
    let n = (1 << 19) - 1;
    let body = format!("[0{}]", ",0".repeat(n - 1));
    let r = c
        .post(gw.url("/x"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = up.last();
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body.ends_with(b",0,1]"));
    // Just under the XML node limit: 49,999 elements.
    let xml = format!("<r>{}</r>", "<a>1</a>".repeat(49_998));
    let r = c
        .post(gw.url("/x"))
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: serde_json::Value = serde_json::from_slice(&up.last().body).unwrap();
    assert_eq!(v["r"]["a"].as_array().unwrap().len(), 49_998);
}
