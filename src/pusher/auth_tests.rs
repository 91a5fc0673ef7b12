use super::*;

// Credentials used by every worked example in the Pusher docs.
const DOC_KEY: &str = "278d425bdf160c739803";
const DOC_SECRET: &str = "7ad3773142a6692b25b8";

// Credentials used to generate vectors with the official Node SDK
// (npm `pusher` 5.3.4), see the `node_sdk_*` tests.
const NODE_KEY: &str = "my-key";
const NODE_SECRET: &str = "my-secret";
const NODE_NOW: u64 = 1_700_000_000;

fn doc_lookup(key: &str) -> Option<String> {
    (key == DOC_KEY).then(|| DOC_SECRET.to_owned())
}

fn node_lookup(key: &str) -> Option<String> {
    (key == NODE_KEY).then(|| NODE_SECRET.to_owned())
}

/// Splits "/path?query" into a RestRequest.
fn req<'a>(method: &'a str, url: &'a str, body: &'a [u8]) -> RestRequest<'a> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    RestRequest {
        method,
        path,
        query,
        body,
    }
}

// ----- primitives -----------------------------------------------------

#[test]
fn sign_is_lowercase_hex_hmac_sha256() {
    // RFC 4231 test case 2.
    assert_eq!(
        sign("Jefe", "what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn constant_time_eq_basics() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(!constant_time_eq(b"", b"a"));
    assert!(secret_eq(b"s3cret", b"s3cret"));
    assert!(!secret_eq(b"s3cret", b"s3cre"));
    assert!(!secret_eq(b"s3cret", b"s3cret "));
    assert!(!secret_eq(b"", b"x"));
    assert!(secret_eq(b"", b""));
}

#[test]
fn body_md5_known_answers() {
    assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
    // HTTP API reference, "Worked authentication example".
    assert_eq!(
        body_md5(br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#),
        "ec365a775a4cd0599faeb73354201b6f"
    );
}

// ----- channel authorization ------------------------------------------

#[test]
fn private_channel_doc_example() {
    // "Authentication and authorization signatures" doc
    // (docs/channels/library_auth_reference/auth-signatures),
    // "Worked examples" -> "Private channel".
    let auth =
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
    assert_eq!(
        channel_auth(DOC_KEY, DOC_SECRET, "1234.1234", "private-foobar", None),
        auth
    );
    assert!(verify_channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        "private-foobar",
        None,
        auth
    ));
}

#[test]
fn presence_channel_doc_example() {
    // Same doc, "Presence channels". The page shows the user data as
    // {"user_id":10,"user_info":{"name":"Mr. Channels"}} but its signature
    // (afaed369...) is the one for "Mr. Pusher": the text was renamed
    // after the value was generated. The official Node SDK and openssl
    // both give 31935e7d... for "Mr. Channels".
    let mr_pusher = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
    let auth =
        "278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c";
    assert!(verify_channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        "presence-foobar",
        Some(mr_pusher),
        auth
    ));

    let mr_channels = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
    let auth =
        "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80";
    assert_eq!(
        channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "presence-foobar",
            Some(mr_channels)
        ),
        auth
    );
    assert!(verify_channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        "presence-foobar",
        Some(mr_channels),
        auth
    ));
}

#[test]
fn node_sdk_channel_auth_vectors() {
    // pusher.authorizeChannel("1234.1234", "private-foobar")
    assert!(verify_channel_auth(
        NODE_KEY,
        NODE_SECRET,
        "1234.1234",
        "private-foobar",
        None,
        "my-key:bd3653a704c2933012b0f30eed88afebbe200ea678302698274ae34875c029fe"
    ));
    // pusher.authorizeChannel("1234.1234", "presence-foobar",
    //   { user_id: "10", user_info: { name: "Mr. Channels" } })
    // -> channel_data is the SDK's JSON.stringify output, signed raw.
    assert!(verify_channel_auth(
        NODE_KEY,
        NODE_SECRET,
        "1234.1234",
        "presence-foobar",
        Some(r#"{"user_id":"10","user_info":{"name":"Mr. Channels"}}"#),
        "my-key:8899d83bf5b424f25b9cbcabad067f1d030fc2d42cffbfd786208a56027998b0"
    ));
}

#[test]
fn channel_auth_rejects_tampering() {
    let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
    let good = channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        "presence-foobar",
        Some(data),
    );
    let ok = |socket: &str, channel: &str, cd: Option<&str>, auth: &str| {
        verify_channel_auth(DOC_KEY, DOC_SECRET, socket, channel, cd, auth)
    };
    assert!(ok("1234.1234", "presence-foobar", Some(data), &good));
    // Other socket, other channel.
    assert!(!ok("1234.1235", "presence-foobar", Some(data), &good));
    assert!(!ok("1234.1234", "presence-foobaz", Some(data), &good));
    // channel_data is signed raw: semantically equal JSON is still a
    // different string.
    let reformatted = r#"{"user_id": 10,"user_info":{"name":"Mr. Channels"}}"#;
    assert!(!ok(
        "1234.1234",
        "presence-foobar",
        Some(reformatted),
        &good
    ));
    let other_user = r#"{"user_id":11,"user_info":{"name":"Mr. Channels"}}"#;
    assert!(!ok("1234.1234", "presence-foobar", Some(other_user), &good));
    // Dropping or adding channel_data changes the string to sign.
    assert!(!ok("1234.1234", "presence-foobar", None, &good));
    let private = channel_auth(DOC_KEY, DOC_SECRET, "1234.1234", "private-foobar", None);
    assert!(!ok("1234.1234", "private-foobar", Some(""), &private));
    // Wrong secret.
    assert!(!verify_channel_auth(
        DOC_KEY,
        "other-secret",
        "1234.1234",
        "private-foobar",
        None,
        &private
    ));
    // Empty secret never authorizes, even with a matching signature.
    let empty = channel_auth(DOC_KEY, "", "1234.1234", "private-foobar", None);
    assert!(!verify_channel_auth(
        DOC_KEY,
        "",
        "1234.1234",
        "private-foobar",
        None,
        &empty
    ));
}

#[test]
fn channel_auth_rejects_wrong_key_prefix_and_malformed_auth() {
    let sig = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
    let check = |auth: &str| {
        verify_channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "private-foobar",
            None,
            auth,
        )
    };
    assert!(check(&format!("{DOC_KEY}:{sig}")));
    assert!(!check(&format!("other-key:{sig}")));
    assert!(!check(&format!("{DOC_KEY}x:{sig}")));
    assert!(!check(&format!(":{sig}")));
    assert!(!check(sig));
    assert!(!check(&format!("{DOC_KEY}{sig}")));
    assert!(!check(&format!("{DOC_KEY}:{}", sig.to_uppercase())));
    assert!(!check(&format!("{DOC_KEY}:{sig} ")));
    assert!(!check(&format!("{DOC_KEY}:{}", &sig[..63])));
    assert!(!check(""));
}

// ----- user authentication --------------------------------------------

#[test]
fn user_signin_doc_example() {
    // auth-signatures doc, "Worked examples" -> "User authentication".
    let auth =
        "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";
    assert_eq!(
        user_auth_string_to_sign("1234.1234", r#"{"id":"12345"}"#),
        r#"1234.1234::user::{"id":"12345"}"#
    );
    assert_eq!(
        user_auth(DOC_KEY, DOC_SECRET, "1234.1234", r#"{"id":"12345"}"#),
        auth
    );
    assert!(verify_user_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        r#"{"id":"12345"}"#,
        auth
    ));
}

#[test]
fn node_sdk_user_auth_vector_with_utf8() {
    // pusher.authenticateUser("1234.1234", { id: "12345", name: "Zoë" })
    assert!(verify_user_auth(
        NODE_KEY,
        NODE_SECRET,
        "1234.1234",
        r#"{"id":"12345","name":"Zoë"}"#,
        "my-key:55f27ed461c6c5f226458b53f191657223f2d45ed1ef5cceb9f7b3c7de7028d7"
    ));
}

#[test]
fn user_signin_rejects_tampering() {
    let auth =
        "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";
    let check = |key: &str, socket: &str, data: &str, auth: &str| {
        verify_user_auth(key, DOC_SECRET, socket, data, auth)
    };
    assert!(check(DOC_KEY, "1234.1234", r#"{"id":"12345"}"#, auth));
    assert!(!check(DOC_KEY, "1234.1234", r#"{"id":"12346"}"#, auth));
    assert!(!check(DOC_KEY, "1234.1234", r#"{"id": "12345"}"#, auth));
    assert!(!check(DOC_KEY, "4321.1234", r#"{"id":"12345"}"#, auth));
    assert!(!check("other-key", "1234.1234", r#"{"id":"12345"}"#, auth));
    assert!(!verify_user_auth(
        DOC_KEY,
        "",
        "1234.1234",
        r#"{"id":"12345"}"#,
        auth
    ));
}

#[test]
fn signin_signature_is_not_a_channel_authorization() {
    // The signed strings collide for channel "" with channel_data
    // "user::<user_data>"; verify_channel_auth refuses such channel names.
    let auth = user_auth(DOC_KEY, DOC_SECRET, "1234.1234", r#"{"id":"12345"}"#);
    assert_eq!(
        channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "",
            Some(r#"user::{"id":"12345"}"#)
        ),
        auth
    );
    assert!(!verify_channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        "",
        Some(r#"user::{"id":"12345"}"#),
        &auth
    ));
    // A private channel named ":user::{...}" would collide too.
    let auth = channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        r#":user::{"id":"1"}"#,
        None,
    );
    assert_eq!(
        auth,
        user_auth(DOC_KEY, DOC_SECRET, "1234.1234", r#"{"id":"1"}"#)
    );
    assert!(!verify_channel_auth(
        DOC_KEY,
        DOC_SECRET,
        "1234.1234",
        r#":user::{"id":"1"}"#,
        None,
        &auth
    ));
}

// ----- webhooks ---------------------------------------------------------

#[test]
fn webhook_signature_node_sdk_vector() {
    // The Node SDK's WebHook#isValid() accepts this signature for this body.
    let body = br#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#;
    let sig = "7156f5c01eb6baddac3efe41eee4e8a668cb4ed77f7389ad968400e2b27bb076";
    assert_eq!(webhook_signature(NODE_SECRET, body), sig);
    assert!(verify_webhook_signature(NODE_SECRET, body, sig));
    assert!(!verify_webhook_signature(NODE_SECRET, &body[1..], sig));
    assert!(!verify_webhook_signature("other", body, sig));
    assert!(!verify_webhook_signature(
        "",
        body,
        &webhook_signature("", body)
    ));
}

// ----- query handling ---------------------------------------------------

#[test]
fn parse_query_decodes_form_encoding() {
    assert_eq!(
        parse_query("a=1&b=x+y&c=%7B%22k%22%3A%22v%22%7D&d&&e=&f=a=b&%41=%c3%a9"),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "x y".into()),
            ("c".into(), r#"{"k":"v"}"#.into()),
            ("d".into(), "".into()),
            ("e".into(), "".into()),
            ("f".into(), "a=b".into()),
            ("A".into(), "é".into()),
        ]
    );
    // Broken escapes are kept literally; a leading '?' is tolerated.
    assert_eq!(
        parse_query("?x=%&y=%4&z=%zz&w=100%"),
        vec![
            ("x".into(), "%".into()),
            ("y".into(), "%4".into()),
            ("z".into(), "%zz".into()),
            ("w".into(), "100%".into()),
        ]
    );
    // %2B is a literal plus, + is a space.
    assert_eq!(parse_query("q=%2B+"), vec![("q".into(), "+ ".into())]);
    assert!(parse_query("").is_empty());
}

#[test]
fn canonical_query_doc_rules() {
    // HTTP API reference: "given the keys auth_key: foo, Name: Something
    // else, you get auth_key=foo&name=Something else".
    assert_eq!(
        canonical_query(&[("Name", "Something else"), ("auth_key", "foo")]),
        "auth_key=foo&name=Something else"
    );
    // auth_signature is excluded; duplicates keep their order.
    assert_eq!(
        canonical_query(&[
            ("channels[]", "b"),
            ("auth_signature", "zzz"),
            ("AUTH_SIGNATURE", "zzz"),
            ("channels[]", "a"),
            ("auth_key", "k"),
        ]),
        "auth_key=k&channels[]=b&channels[]=a"
    );
}

#[test]
fn percent_encoding_round_trips() {
    let v = "a b+c&d=é/ü%;,@~";
    let enc = percent_encode_component(v);
    assert_eq!(enc, "a%20b%2Bc%26d%3D%C3%A9%2F%C3%BC%25%3B%2C%40~");
    assert_eq!(
        parse_query(&format!("k={enc}")),
        vec![("k".into(), v.into())]
    );
}

// ----- REST signing: documented and SDK vectors ------------------------

const DOC_BODY: &[u8] = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
const DOC_QUERY: &str = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
const DOC_TS: u64 = 1_353_088_179;

#[test]
fn rest_doc_worked_example() {
    // HTTP API reference (docs/channels/library_auth_reference/rest-api),
    // "Worked authentication example".
    let params = parse_query(DOC_QUERY);
    assert_eq!(
        rest_string_to_sign("POST", "/apps/3/events", &params),
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    );
    assert_eq!(
        sign_rest_request(
            "POST",
            "/apps/3/events",
            &[],
            DOC_BODY,
            DOC_KEY,
            DOC_SECRET,
            DOC_TS
        ),
        DOC_QUERY
    );
    let r = RestRequest {
        method: "POST",
        path: "/apps/3/events",
        query: DOC_QUERY,
        body: DOC_BODY,
    };
    assert_eq!(
        verify_rest_request(&r, doc_lookup, DOC_TS, DEFAULT_MAX_SKEW_SECS),
        Ok(DOC_KEY.to_owned())
    );
}

#[test]
fn signature_gem_vector_with_uppercase_keys() {
    // Pusher's reference signer/verifier, the Ruby `signature` gem
    // (spec/signature_spec.rb): key "key", secret "secret", POST
    // /some/path, {query: params, go: here}, timestamp 1234 ->
    // 3b237953..., and "should cope with upcase keys (keys are lowercased
    // before signing)" with {"Query" => "params", "GO" => "here"}.
    let sig = "3b237953a5ba6619875cbb2a2d43e8da9ef5824e8a2c689f6284ac85bc1ea0db";
    let lookup = |k: &str| (k == "key").then(|| "secret".to_owned());
    assert_eq!(
        rest_string_to_sign(
            "POST",
            "/some/path",
            &[
                ("query", "params"),
                ("go", "here"),
                ("auth_key", "key"),
                ("auth_timestamp", "1234"),
                ("auth_version", "1.0")
            ]
        ),
        "POST\n/some/path\nauth_key=key&auth_timestamp=1234&auth_version=1.0&go=here&query=params"
    );
    for query in [
        format!(
            "query=params&go=here&auth_key=key&auth_timestamp=1234&auth_version=1.0&auth_signature={sig}"
        ),
        format!(
            "Query=params&GO=here&auth_key=key&auth_timestamp=1234&auth_version=1.0&auth_signature={sig}"
        ),
        format!(
            "QUERY=params&Go=here&AUTH_KEY=key&Auth_Timestamp=1234&auth_VERSION=1.0&Auth_Signature={sig}"
        ),
    ] {
        let r = req("POST", "/some/path", b"");
        let r = RestRequest { query: &query, ..r };
        assert_eq!(
            verify_rest_request(&r, lookup, 1234, 600),
            Ok("key".to_owned()),
            "{query}"
        );
    }
    // The gem's own expectation for just {query: params}.
    assert_eq!(
        sign_rest_request(
            "POST",
            "/some/path",
            &[("query", "params")],
            b"",
            "key",
            "secret",
            1234
        ),
        "auth_key=key&auth_timestamp=1234&auth_version=1.0&query=params&auth_signature=da078fcedd72941b6c873caa40d0d6b2000ebfc700cee802b128dd20f72e74e9"
    );
}

/// Requests captured from the official Node SDK (npm `pusher` 5.3.4,
/// appId "123", key "my-key", secret "my-secret", Date.now() pinned to
/// 1700000000123) sending to a loopback HTTP server: (method, url, body).
const NODE_REQUESTS: &[(&str, &str, &str)] = &[
    // pusher.trigger("my-channel", "my-event", { hello: "world" })
    (
        "POST",
        "/apps/123/events?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=d7c48e936f1d67eaf07e79f7cb899c7a&auth_signature=1cf1290a40b28f01ae88a25f719d8c6024034c5fef82f98ac7ab0d512dc91cc1",
        r#"{"name":"my-event","data":"{\"hello\":\"world\"}","channels":["my-channel"]}"#,
    ),
    // pusher.trigger(["a-channel","b-channel"], "multi", "plain string", { socket_id: "123.456" })
    (
        "POST",
        "/apps/123/events?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=ac3da64dd0fbb28f0d87ede6e89b86be&auth_signature=291d937d7aa9f9c0a617feef936c9c20f183a71174def9681991770420ec77e5",
        r#"{"name":"multi","data":"plain string","channels":["a-channel","b-channel"],"socket_id":"123.456"}"#,
    ),
    // pusher.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })
    (
        "GET",
        "/apps/123/channels?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&filter_by_prefix=presence-&info=user_count&auth_signature=30dc6e1fb821b4f00f66711d2eb4ed5ca103c9edb702dfb58fa802a2d07675b1",
        "",
    ),
    // pusher.get({ path: "/channels/presence-room/users" })
    (
        "GET",
        "/apps/123/channels/presence-room/users?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&auth_signature=27e5669fa6807804c67bcbd2de4bf6fb01ab2262d6600046f2559292aa680846",
        "",
    ),
    // pusher.get({ path: "/channels", params: { filter_by_prefix: "a b", info: "user_count,subscription_count" } })
    // (the SDK signs the raw value "a b"; the HTTP client sends %20)
    (
        "GET",
        "/apps/123/channels?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&filter_by_prefix=a%20b&info=user_count,subscription_count&auth_signature=e328bc36a6a7f0482619d9e6c5293dd33ed487efcc3222c568ce426f2875a254",
        "",
    ),
    // pusher.triggerBatch([{ channel: "c1", name: "e1", data: "d1" }])
    (
        "POST",
        "/apps/123/batch_events?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=db96d0899e81e843e426431a7a76404e&auth_signature=f4d60de0deacef7e34a771d5b46d35f7ae55e861c9637c16aca4765718d03a2e",
        r#"{"batch":[{"channel":"c1","name":"e1","data":"d1"}]}"#,
    ),
];

#[test]
fn node_sdk_requests_verify() {
    for (method, url, body) in NODE_REQUESTS {
        let r = req(method, url, body.as_bytes());
        assert_eq!(
            verify_rest_request(&r, node_lookup, NODE_NOW, DEFAULT_MAX_SKEW_SECS),
            Ok(NODE_KEY.to_owned()),
            "{method} {url}"
        );
    }
}

#[test]
fn sign_rest_request_matches_node_sdk() {
    for (method, url, body) in NODE_REQUESTS {
        let (path, query) = url.split_once('?').unwrap();
        let parsed = parse_query(query);
        let user: Vec<(&str, &str)> = parsed
            .iter()
            .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ours = sign_rest_request(
            method,
            path,
            &user,
            body.as_bytes(),
            NODE_KEY,
            NODE_SECRET,
            NODE_NOW,
        );
        let sig = |q: &str| {
            parse_query(q)
                .into_iter()
                .find(|(k, _)| k == "auth_signature")
                .map(|(_, v)| v)
        };
        assert_eq!(sig(&ours), sig(query), "{method} {url}");
        // Our own output verifies too.
        let r = RestRequest {
            method,
            path,
            query: &ours,
            body: body.as_bytes(),
        };
        assert!(verify_rest_request(&r, node_lookup, NODE_NOW, 600).is_ok());
    }
}

// ----- REST verification: behaviour ------------------------------------

fn doc_request(query: &str) -> Result<String, RestAuthError> {
    let r = RestRequest {
        method: "POST",
        path: "/apps/3/events",
        query,
        body: DOC_BODY,
    };
    verify_rest_request(&r, doc_lookup, DOC_TS, DEFAULT_MAX_SKEW_SECS)
}

#[test]
fn rest_order_independence() {
    let mut pairs: Vec<&str> = DOC_QUERY.split('&').collect();
    for rotation in 0..pairs.len() {
        pairs.rotate_left(1);
        let q = pairs.join("&");
        assert_eq!(
            doc_request(&q),
            Ok(DOC_KEY.to_owned()),
            "rotation {rotation}: {q}"
        );
    }
    pairs.reverse();
    assert_eq!(doc_request(&pairs.join("&")), Ok(DOC_KEY.to_owned()));
}

#[test]
fn rest_percent_escapes_and_plus() {
    // Signed over the decoded value "a b"; '+' and '%20' both decode to it.
    let (_, url, _) = NODE_REQUESTS[4];
    let (path, query) = url.split_once('?').unwrap();
    for q in [
        query.to_owned(),
        query.replace("a%20b", "a+b"),
        query.replace(
            "user_count,subscription_count",
            "user_count%2Csubscription_count",
        ),
        query.replace("auth_key=my-key", "auth%5Fkey=my%2Dkey"),
    ] {
        let r = RestRequest {
            method: "GET",
            path,
            query: &q,
            body: b"",
        };
        assert_eq!(
            verify_rest_request(&r, node_lookup, NODE_NOW, 600),
            Ok(NODE_KEY.to_owned()),
            "{q}"
        );
    }
    // A literal plus (%2B) is a different value.
    let q = query.replace("a%20b", "a%2Bb");
    let r = RestRequest {
        method: "GET",
        path,
        query: &q,
        body: b"",
    };
    assert!(matches!(
        verify_rest_request(&r, node_lookup, NODE_NOW, 600),
        Err(RestAuthError::BadSignature { .. })
    ));

    // Round trip of awkward values through sign_rest_request.
    let params = [
        ("filter_by_prefix", "presence-a b+c&d=é/ü"),
        ("info", "user_count,subscription_count"),
        ("Mixed_Case", "%41"),
    ];
    let q = sign_rest_request("GET", "/apps/1/channels", &params, b"", "k", "s", 50);
    let r = RestRequest {
        method: "GET",
        path: "/apps/1/channels",
        query: &q,
        body: b"",
    };
    let lookup = |k: &str| (k == "k").then(|| "s".to_owned());
    assert_eq!(verify_rest_request(&r, lookup, 50, 600), Ok("k".to_owned()));
    let decoded = parse_query(&q);
    assert!(decoded.contains(&("filter_by_prefix".into(), "presence-a b+c&d=é/ü".into())));
    assert!(decoded.contains(&("Mixed_Case".into(), "%41".into())));
}

#[test]
fn rest_timestamp_window() {
    let body = b"{}";
    let lookup = |k: &str| (k == "k").then(|| "s".to_owned());
    let at = |ts: u64, now: u64| {
        let q = sign_rest_request("POST", "/apps/1/events", &[], body, "k", "s", ts);
        let r = RestRequest {
            method: "POST",
            path: "/apps/1/events",
            query: &q,
            body,
        };
        verify_rest_request(&r, lookup, now, 600)
    };
    let ts = 1_000_000;
    assert!(at(ts, ts).is_ok());
    assert!(at(ts, ts + 599).is_ok());
    assert!(at(ts, ts - 599).is_ok());
    assert_eq!(
        at(ts, ts + 600),
        Err(RestAuthError::Expired {
            skew: -600,
            max_skew: 600
        })
    );
    assert_eq!(
        at(ts, ts - 600),
        Err(RestAuthError::Expired {
            skew: 600,
            max_skew: 600
        })
    );
    assert_eq!(
        at(0, u64::MAX),
        Err(RestAuthError::Expired {
            skew: i64::MIN,
            max_skew: 600
        })
    );
    // The documented example is long expired today.
    assert!(matches!(
        doc_request_at(DOC_QUERY, 1_700_000_000),
        Err(RestAuthError::Expired {
            skew: -346_911_821,
            ..
        })
    ));
}

fn doc_request_at(query: &str, now: u64) -> Result<String, RestAuthError> {
    let r = RestRequest {
        method: "POST",
        path: "/apps/3/events",
        query,
        body: DOC_BODY,
    };
    verify_rest_request(&r, doc_lookup, now, DEFAULT_MAX_SKEW_SECS)
}

#[test]
fn rest_bad_timestamp_and_version() {
    for bad in [
        "",
        "abc",
        "+1353088179",
        "-5",
        "1353088179.0",
        " 1353088179",
        "99999999999999999999999",
    ] {
        let q = DOC_QUERY.replace(
            "auth_timestamp=1353088179",
            &format!("auth_timestamp={}", percent_encode_component(bad)),
        );
        assert_eq!(
            doc_request(&q),
            Err(RestAuthError::BadTimestamp(bad.to_owned())),
            "{bad:?}"
        );
    }
    let q = DOC_QUERY.replace("auth_version=1.0", "auth_version=1.1");
    assert_eq!(
        doc_request(&q),
        Err(RestAuthError::BadVersion("1.1".into()))
    );
}

#[test]
fn rest_body_md5() {
    // Tampered body, query untouched.
    let r = RestRequest {
        method: "POST",
        path: "/apps/3/events",
        query: DOC_QUERY,
        body: br#"{"name":"bar","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#,
    };
    assert!(matches!(
        verify_rest_request(&r, doc_lookup, DOC_TS, 600),
        Err(RestAuthError::BodyMd5Mismatch { ref got, .. }) if got == "ec365a775a4cd0599faeb73354201b6f"
    ));
    // Non-empty body without body_md5.
    let q = DOC_QUERY.replace("&body_md5=ec365a775a4cd0599faeb73354201b6f", "");
    assert_eq!(
        doc_request(&q),
        Err(RestAuthError::MissingParam("body_md5"))
    );
    // body_md5 present with an empty body must match the empty MD5.
    let r = RestRequest { body: b"", ..r };
    assert!(matches!(
        verify_rest_request(&r, doc_lookup, DOC_TS, 600),
        Err(RestAuthError::BodyMd5Mismatch { .. })
    ));
    // Uppercase hex in body_md5 is accepted as the same digest, but it is
    // still signed as sent, so the doc signature no longer matches.
    let q = DOC_QUERY.replace(
        "ec365a775a4cd0599faeb73354201b6f",
        "EC365A775A4CD0599FAEB73354201B6F",
    );
    assert!(matches!(
        doc_request(&q),
        Err(RestAuthError::BadSignature { .. })
    ));
}

#[test]
fn rest_missing_duplicate_and_unknown() {
    for name in [
        "auth_key",
        "auth_timestamp",
        "auth_version",
        "auth_signature",
    ] {
        let q: Vec<&str> = DOC_QUERY
            .split('&')
            .filter(|p| !p.starts_with(&format!("{name}=")))
            .collect();
        assert_eq!(
            doc_request(&q.join("&")),
            Err(RestAuthError::MissingParam(name)),
            "{name}"
        );
    }
    assert_eq!(
        doc_request(""),
        Err(RestAuthError::MissingParam("auth_key"))
    );
    for name in RESERVED_PARAMS {
        let (_, value) = DOC_QUERY
            .split('&')
            .find_map(|p| p.split_once('=').filter(|(k, _)| *k == name))
            .unwrap();
        let q = format!("{DOC_QUERY}&{}={value}", name.to_uppercase());
        assert_eq!(
            doc_request(&q),
            Err(RestAuthError::DuplicateParam(name)),
            "{name}"
        );
    }
    let q = DOC_QUERY.replace("auth_key=278d425bdf160c739803", "auth_key=nope");
    assert_eq!(
        doc_request(&q),
        Err(RestAuthError::UnknownKey("nope".into()))
    );
    // An empty secret counts as unknown.
    let r = RestRequest {
        method: "POST",
        path: "/apps/3/events",
        query: DOC_QUERY,
        body: DOC_BODY,
    };
    assert_eq!(
        verify_rest_request(&r, |_| Some(String::new()), DOC_TS, 600),
        Err(RestAuthError::UnknownKey(DOC_KEY.into()))
    );
}

#[test]
fn rest_rejects_tampering() {
    let bad_sig = |r: &RestRequest<'_>| {
        matches!(
            verify_rest_request(r, doc_lookup, DOC_TS, 600),
            Err(RestAuthError::BadSignature { .. })
        )
    };
    let base = RestRequest {
        method: "POST",
        path: "/apps/3/events",
        query: DOC_QUERY,
        body: DOC_BODY,
    };
    // Method is uppercased before signing, so lowercase still verifies.
    assert!(
        verify_rest_request(
            &RestRequest {
                method: "post",
                ..base
            },
            doc_lookup,
            DOC_TS,
            600
        )
        .is_ok()
    );
    assert!(bad_sig(&RestRequest {
        method: "PUT",
        ..base
    }));
    assert!(bad_sig(&RestRequest {
        path: "/apps/4/events",
        ..base
    }));
    assert!(bad_sig(&RestRequest {
        path: "/apps/3/events/",
        ..base
    }));
    assert!(bad_sig(&RestRequest {
        path: "/apps/3/batch_events",
        ..base
    }));
    // An extra unsigned parameter.
    let q = format!("{DOC_QUERY}&socket_id=1.1");
    assert!(bad_sig(&RestRequest { query: &q, ..base }));
    // A different timestamp (still within the window).
    let q = DOC_QUERY.replace("1353088179", "1353088180");
    assert!(bad_sig(&RestRequest { query: &q, ..base }));
    // Uppercase or truncated signature.
    let q = DOC_QUERY.replace(
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        "DA454824C97BA181A32CCC17A72625BA02771F50B50E1E7430E47A1F3F457E6C",
    );
    assert!(bad_sig(&RestRequest { query: &q, ..base }));
    let q = &DOC_QUERY[..DOC_QUERY.len() - 1];
    assert!(bad_sig(&RestRequest { query: q, ..base }));
    // Wrong secret.
    assert!(matches!(
        verify_rest_request(&base, |_| Some("wrong".into()), DOC_TS, 600),
        Err(RestAuthError::BadSignature { .. })
    ));
    // The error shows what the server signed.
    let err = verify_rest_request(
        &RestRequest {
            method: "PUT",
            ..base
        },
        doc_lookup,
        DOC_TS,
        600,
    )
    .unwrap_err();
    assert_eq!(
        err,
        RestAuthError::BadSignature {
            string_to_sign: "PUT\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f".into()
        }
    );
    assert!(err.to_string().contains(r"PUT\n/apps/3/events\nauth_key="));
}

#[test]
#[should_panic(expected = "auth_key is set by sign_rest_request")]
fn sign_rest_request_refuses_reserved_params() {
    sign_rest_request(
        "GET",
        "/apps/1/channels",
        &[("Auth_Key", "x")],
        b"",
        "k",
        "s",
        1,
    );
}

#[test]
fn error_status_mapping_and_messages() {
    let cases: Vec<(RestAuthError, u16)> = vec![
        (RestAuthError::MissingParam("auth_key"), 401),
        (RestAuthError::DuplicateParam("auth_key"), 400),
        (RestAuthError::BadTimestamp("x".into()), 401),
        (
            RestAuthError::Expired {
                skew: -700,
                max_skew: 600,
            },
            401,
        ),
        (RestAuthError::BadVersion("2.0".into()), 401),
        (RestAuthError::UnknownKey("k".into()), 401),
        (
            RestAuthError::BodyMd5Mismatch {
                expected: "a".into(),
                got: "b".into(),
            },
            401,
        ),
        (
            RestAuthError::BadSignature {
                string_to_sign: "GET\n/\n".into(),
            },
            401,
        ),
    ];
    for (err, status) in cases {
        assert_eq!(err.status(), status, "{err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        RestAuthError::Expired {
            skew: -700,
            max_skew: 600
        }
        .to_string(),
        "auth_timestamp is -700s away from server time (allowed: less than 600s either way); check the client's clock (e.g. NTP) and sign each request just before sending it"
    );
    assert!(
        RestAuthError::MissingParam("body_md5")
            .to_string()
            .starts_with("missing query parameter `body_md5`")
    );
}

// ----- bearer -----------------------------------------------------------

#[test]
fn bearer_token() {
    assert!(verify_bearer("Bearer s3cret", "s3cret"));
    assert!(verify_bearer("bearer s3cret", "s3cret"));
    assert!(verify_bearer("BEARER   s3cret  ", "s3cret"));
    assert!(verify_bearer("Bearer\ts3cret", "s3cret"));
    assert!(!verify_bearer("Bearer s3cret", "s3cre"));
    assert!(!verify_bearer("Bearer s3cre", "s3cret"));
    assert!(!verify_bearer("Bearer S3CRET", "s3cret"));
    assert!(!verify_bearer("Basic s3cret", "s3cret"));
    assert!(!verify_bearer("Bearers3cret", "s3cret"));
    assert!(!verify_bearer("s3cret", "s3cret"));
    assert!(!verify_bearer("Bearer", ""));
    assert!(!verify_bearer("Bearer ", ""));
    assert!(!verify_bearer("", ""));
    assert!(!verify_bearer("Bearer x", ""));
    assert!(!verify_bearer("Bearer s3cret extra", "s3cret"));
}
