//! The web UI's rules over plain HTTP: sessions, CSRF, and 404 for what a person may not see.
//! (The whole flows run in a real browser in tests/web.)
mod common;

use common::*;
use reqwest::{header, StatusCode};

struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_string()
}

impl Browser {
    fn new(server: &Server) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            http,
            base: server.url.clone(),
            cookies: vec![],
        }
    }

    fn remember(&mut self, headers: &header::HeaderMap) {
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let resp = req.header(header::COOKIE, cookie).send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        self.remember(&headers);
        Page {
            status,
            headers,
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let page = self.get("/login").await;
        let token = hidden(&page.body, "login_token");
        self.post(
            "/login",
            &[
                ("login_token", &token),
                ("username", user),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }
}

async fn set_password(server: &Server, user: &str, password: &str) {
    let a = server.state.store.account(user).await.unwrap().unwrap();
    let hash = modelyard_server::hash_password(password).unwrap();
    server
        .state
        .store
        .set_password_hash(a.id, Some(&hash))
        .await
        .unwrap();
}

#[tokio::test]
async fn sign_in_sets_a_safe_session_and_refuses_wrong_passwords() {
    let s = start(Backend::Sqlite).await;
    set_password(&s, "alice", "correct horse").await;
    let mut b = Browser::new(&s);
    assert_eq!(
        b.sign_in("alice", "wrong horse").await.status,
        StatusCode::UNAUTHORIZED
    );
    // An organization or an account without a password cannot sign in at all.
    assert_eq!(b.sign_in("bob", "").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        b.sign_in("acme", "correct horse").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(b.cookies.iter().all(|(k, _)| k != "modelyard_session"));

    let ok = b.sign_in("alice", "correct horse").await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let set: Vec<&str> = ok
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("modelyard_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "http needs no Secure: {session}"
    );
    assert!(b.get("/account").await.body.contains("API tokens"));

    // A sign-in form without its token (a forged one) is refused.
    let mut forged = Browser::new(&s);
    let r = forged
        .post(
            "/login",
            &[("username", "alice"), ("password", "correct horse")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Signing out ends the session on the server, not only in the browser.
    let stolen = b.cookies.clone();
    let csrf = hidden(&b.get("/").await.body, "csrf");
    assert_eq!(
        b.post("/logout", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    let mut thief = Browser::new(&s);
    thief.cookies = stolen;
    let r = thief.get("/account").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login?next=%2Faccount");
}

#[tokio::test]
async fn session_cookies_are_secure_behind_https() {
    let s = start_with(Backend::Sqlite, |c| {
        c.public_url = Some("https://models.example".into())
    })
    .await;
    set_password(&s, "alice", "correct horse").await;
    let mut b = Browser::new(&s);
    let ok = b.sign_in("alice", "correct horse").await;
    let session = ok
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("modelyard_session="))
        .unwrap();
    assert!(session.contains("; Secure"), "{session}");
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_change_nothing() {
    let s = start(Backend::Sqlite).await;
    set_password(&s, "alice", "correct horse").await;
    s.create_model("alice", "alice", "m", "private").await;
    let mut b = Browser::new(&s);
    b.sign_in("alice", "correct horse").await;
    let csrf = hidden(&b.get("/alice/m/settings").await.body, "csrf");
    let change = [("visibility", "public"), ("description", "changed")];
    for token in [None, Some(""), Some("0".repeat(64).as_str())] {
        let mut form = change.to_vec();
        if let Some(t) = token {
            form.push(("csrf", t));
        }
        let r = b.post("/alice/m/settings", &form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
    }
    // Another session's token is no good either.
    set_password(&s, "bob", "battery staple").await;
    let mut bob = Browser::new(&s);
    bob.sign_in("bob", "battery staple").await;
    let bobs = hidden(&bob.get("/account").await.body, "csrf");
    let mut form = change.to_vec();
    form.push(("csrf", &bobs));
    assert_eq!(
        b.post("/alice/m/settings", &form).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("alice", "/v1/models/alice/m").await.body["visibility"],
        "private"
    );

    let mut form = change.to_vec();
    form.push(("csrf", &csrf));
    assert_eq!(
        b.post("/alice/m/settings", &form).await.status,
        StatusCode::SEE_OTHER
    );
    let m = s.get("alice", "/v1/models/alice/m").await.body;
    assert_eq!(
        (m["visibility"].as_str(), m["description"].as_str()),
        (Some("public"), Some("changed"))
    );

    // Signed out, a form leads to the sign-in page and changes nothing.
    let mut anon = Browser::new(&s);
    let r = anon
        .post("/alice/m/delete", &[("confirm", "alice/m")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with("/login?next="));
}

#[tokio::test]
async fn private_pages_are_404_to_outsiders_and_the_api_keeps_problem_json() {
    let s = start(Backend::Sqlite).await;
    set_password(&s, "bob", "battery staple").await;
    s.create_model("alice", "alice", "secret", "private").await;
    let v = s.version("alice/secret", "c1").await;
    let p = s.predict("alice", "alice/secret", &v).await;
    let pid = p.body["id"].as_str().unwrap().to_string();
    let mut bob = Browser::new(&s);
    bob.sign_in("bob", "battery staple").await;
    let mut anon = Browser::new(&s);
    for path in [
        "/alice/secret".to_string(),
        "/alice/secret/playground".into(),
        "/alice/secret/versions".into(),
        format!("/alice/secret/versions/{v}"),
        "/alice/secret/settings".into(),
        format!("/p/{pid}"),
    ] {
        let r = bob.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(!r.body.contains(&v), "{path} leaks the version id");
        if path != format!("/p/{pid}") && path != "/alice/secret/settings" {
            assert_eq!(
                anon.get(&path).await.status,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
    // Unknown addresses: HTML for people, problem+json in the API's space.
    let r = anon.get("/no/such/page/here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    for path in ["/v1/nothing", "/v1/models/api", "/v1/a/b/c"] {
        let r = s.get("alice", path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{path}"
        );
    }
    // The owner sees the page; the prediction's web URL is its page.
    set_password(&s, "alice", "correct horse").await;
    let mut alice = Browser::new(&s);
    alice.sign_in("alice", "correct horse").await;
    assert_eq!(alice.get("/alice/secret").await.status, StatusCode::OK);
    assert_eq!(p.body["urls"]["web"], format!("{}/p/{pid}", s.url));
    let page = alice.get(&format!("/p/{pid}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&pid));
}

#[tokio::test]
async fn owners_are_warned_on_model_pages_when_model_code_runs_unconfined() {
    const WARNING: &str = "runs model code unconfined";
    for confine in [false, true] {
        let server = start_with(Backend::Sqlite, |c| c.sandbox.confine = confine).await;
        server.create_model("alice", "alice", "m", "public").await;
        set_password(&server, "alice", "correct horse battery").await;
        set_password(&server, "bob", "another horse battery").await;
        let mut alice = Browser::new(&server);
        alice.sign_in("alice", "correct horse battery").await;
        let page = alice.get("/alice/m").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body.contains(WARNING), !confine, "confine={confine}");
        // Only owners are told.
        let mut bob = Browser::new(&server);
        bob.sign_in("bob", "another horse battery").await;
        let page = bob.get("/alice/m").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains(WARNING));
    }
}

#[tokio::test]
async fn after_sign_in_only_plain_paths_on_this_site_are_followed() {
    let s = start(Backend::Sqlite).await;
    set_password(&s, "alice", "password-a").await;
    let mut b = Browser::new(&s);
    assert_eq!(
        b.sign_in("alice", "password-a").await.status,
        StatusCode::SEE_OTHER
    );
    // Each of these, decoded, is something a browser could resolve to another origin (or a
    // header the server could not write).
    for bad in [
        "/%09/evil.example/x",
        "/%0a/evil.example",
        "/%0d%0aSet-Cookie:%20x=1",
        "//evil.example",
        "/%5Cevil.example",
        "%5C%5Cevil.example",
        "https://evil.example",
        "/%20/evil.example",
        "/%0b/evil.example",
        "javascript:alert(1)",
    ] {
        let p = b.get(&format!("/login?next={bad}")).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{bad}");
        assert_eq!(p.headers[header::LOCATION], "/", "{bad}");
    }
    let p = b.get("/login?next=/alice/hello%3Ftab%3Dapi").await;
    assert_eq!(p.headers[header::LOCATION], "/alice/hello?tab=api");
    // The same when the form carries it.
    let mut b = Browser::new(&s);
    let page = b.get("/login").await;
    let token = hidden(&page.body, "login_token");
    let p = b
        .post(
            "/login",
            &[
                ("login_token", &token),
                ("username", "alice"),
                ("password", "password-a"),
                ("next", "/\t/evil.example"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.headers[header::LOCATION], "/");
}

#[tokio::test]
async fn forms_from_another_origin_are_refused_even_with_the_token() {
    let s = start(Backend::Sqlite).await;
    set_password(&s, "alice", "password-a").await;
    let mut b = Browser::new(&s);
    b.sign_in("alice", "password-a").await;
    let account = b.get("/account").await;
    let csrf = hidden(&account.body, "csrf");
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let req = b
            .http
            .post(format!("{}/logout", b.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .body(format!("csrf={csrf}"));
        let p = b.send(req).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{origin}");
        assert!(p.body.contains("another site"), "{origin}");
    }
    let req = b
        .http
        .post(format!("{}/logout", b.base))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(format!("csrf={csrf}"));
    assert_eq!(b.send(req).await.status, StatusCode::FORBIDDEN);
    // Still signed in: nothing was changed.
    assert_eq!(b.get("/account").await.status, StatusCode::OK);
    // From this site (the browser names our origin), the same form works.
    let req = b
        .http
        .post(format!("{}/logout", b.base))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, b.base.clone())
        .body(format!("csrf={csrf}"));
    assert_eq!(b.send(req).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn failed_sign_ins_are_slowed_down_per_account_and_said_so() {
    let s = start(Backend::Sqlite).await;
    set_password(&s, "alice", "password-a").await;
    let mut b = Browser::new(&s);
    for _ in 0..5 {
        assert_eq!(
            b.sign_in("alice", "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        b.sign_in("alice", "guess").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Now even the right password waits, and the page says how long.
    let p = b.sign_in("alice", "password-a").await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = p.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(
        p.body.contains(&format!("Try again in {wait} s")),
        "{}",
        p.body
    );
    assert!(b.cookies.iter().all(|(k, _)| k != "modelyard_session"));
    // Another account from the same address is not locked by alice's failures.
    set_password(&s, "bob", "password-b").await;
    let mut other = Browser::new(&s);
    assert_eq!(
        other.sign_in("bob", "password-b").await.status,
        StatusCode::SEE_OTHER
    );
    // The window is short: after it, alice signs in.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(
        b.sign_in("alice", "password-a").await.status,
        StatusCode::SEE_OTHER
    );
}

/// The Trash page and the prune form: only the item's owners restore or purge it, each form
/// needs its session's token, and a prune's preview changes nothing.
#[tokio::test]
async fn trash_forms_keep_to_owners_and_their_session() {
    let s = start_with(Backend::Sqlite, |c| {
        c.trash = std::time::Duration::from_secs(7 * 24 * 3600)
    })
    .await;
    set_password(&s, "alice", "correct horse").await;
    set_password(&s, "bob", "battery staple").await;
    s.create_model("alice", "alice", "m", "private").await;
    let old = s.version("alice/m", "m-1").await;
    s.version("alice/m", "m-2").await;
    let path = format!("/v1/models/alice/m/versions/{old}");
    let r = s.call("alice", reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let mut alice = Browser::new(&s);
    alice.sign_in("alice", "correct horse").await;
    let page = alice.get("/account/trash").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&format!(
            "Version <code>{}</code> of <code>alice/m</code>",
            &old[..12]
        )),
        "{}",
        page.body
    );
    assert!(page.body.contains("6 days 23 hours left"), "{}", page.body);
    let csrf = hidden(&page.body, "csrf");
    let item = [("owner", "alice"), ("name", "m"), ("version", old.as_str())];

    // Without the token, nothing happens; bob's own token does not reach alice's trash.
    assert_eq!(
        alice.post("/account/trash/purge", &item).await.status,
        StatusCode::FORBIDDEN
    );
    let mut bob = Browser::new(&s);
    bob.sign_in("bob", "battery staple").await;
    let bobs = hidden(&bob.get("/account/trash").await.body, "csrf");
    for action in ["restore", "purge"] {
        let mut form = item.to_vec();
        form.push(("csrf", &bobs));
        let r = bob.post(&format!("/account/trash/{action}"), &form).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        s.get("alice", "/v1/trash").await.body["results"][0]["version_id"],
        old.as_str()
    );

    let mut form = item.to_vec();
    form.push(("csrf", &csrf));
    let r = alice.post("/account/trash/restore", &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers[header::LOCATION].to_str().unwrap(),
        format!("/alice/m/versions/{old}")
    );
    assert_eq!(s.get("alice", &path).await.status, StatusCode::OK);
    // Restored already: the page says it is not in the trash.
    let r = alice.post("/account/trash/restore", &form).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("not in your trash"), "{}", r.body);

    // The prune preview is a GET that changes nothing; the prune needs the token.
    let preview = alice.get("/alice/m/versions?keep=1").await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(preview
        .body
        .contains(&format!("data-version=\"{old}\" data-decision=\"deleted\"")));
    let bad = alice.get("/alice/m/versions?keep=x").await;
    assert!(bad.body.contains("whole number"), "{}", bad.body);
    assert_eq!(s.get("alice", &path).await.status, StatusCode::OK);
    assert_eq!(
        alice
            .post("/alice/m/versions/prune", &[("keep", "1")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = alice
        .post("/alice/m/versions/prune", &[("keep", "1"), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(s.get("alice", &path).await.status, StatusCode::NOT_FOUND);
    let r = bob
        .post("/alice/m/versions/prune", &[("keep", "0"), ("csrf", &bobs)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get("alice", "/v1/models/alice/m/versions").await.body["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
