//! The room screen's refusals over plain HTTP against the real `vigil-edge` binary: sign-in
//! without its form token, a device made to wait after three wrong PINs for a name while
//! colleagues still sign in, a signed-in form without its CSRF token, and the front desk allowed to register a
//! patient but refused the start of an infusion; and the site's own infusion limit applied.
//!
//! The staff list is put in the appliance's database as the sync client would store it (a
//! site configuration document), so no cloud is needed.

mod support;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use support::{PHQ9_FORM, csrf_field, screening_form, set_cookie, start_edge, write_edge_config};

const NURSE_PIN: &str = "246802";
const DESK_PIN: &str = "135702";
const CLINICIAN_PIN: &str = "975310";

/// Writes austin's site configuration, with a nurse, a clinician and a front-desk person and
/// the medical director's limit of at most 0.4 mg/kg, into the appliance database at `db`.
fn seed_staff(db: &std::path::Path) {
    let staff = [
        ("nurse-ana", "Ana Ruiz", "nurse", NURSE_PIN),
        ("dr-kim", "Sam Kim", "clinician", CLINICIAN_PIN),
        ("desk-lee", "Lee Park", "front_desk", DESK_PIN),
    ];
    support::seed_site_config(db, "austin", &staff, |doc| {
        doc.set_infusion_limits(&vigil_shared::clinical::InfusionLimits {
            max_dose_mg_per_kg: 0.4,
            ..Default::default()
        })
        .unwrap();
    });
}

/// Austin room 1 with its staff list and no monitors, and a browser-like client that does not
/// follow redirects (the tests read them).
fn room() -> (tempfile::TempDir, support::Proc, support::Http, Client) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_edge_config(dir.path(), "austin", "1", "[source]\nkind = \"none\"\n");
    seed_staff(&dir.path().join("data-austin-1").join("vigil-edge.db"));
    let (proc, edge) = start_edge(&config);
    let c = Client {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: edge.base.clone(),
    };
    (dir, proc, edge, c)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// Loads the sign-in page and returns its token cookie and field.
    async fn login_form(&self) -> (String, String) {
        let res = self
            .http
            .get(format!("{}/screen/login", self.base))
            .send()
            .await
            .unwrap();
        let cookie = set_cookie(&res, "vigil_room_login_csrf").expect("a sign-in token cookie");
        let html = res.text().await.unwrap();
        (cookie, csrf_field(&html))
    }

    async fn sign_in(&self, cookie: &str, csrf: &str, staff: &str, pin: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/screen/login", self.base))
            .header(COOKIE, cookie)
            .form(&[("staff", staff), ("pin", pin), ("csrf", csrf)])
            .send()
            .await
            .unwrap()
    }

    /// Signs `staff` in; their session cookie and the CSRF token of their forms.
    async fn signed_in(&self, staff: &str, pin: &str) -> (String, String) {
        let (cookie, csrf) = self.login_form().await;
        let res = self.sign_in(&cookie, &csrf, staff, pin).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{staff} signs in");
        let session = set_cookie(&res, "vigil_room").unwrap();
        let page = self.page(&session, "/screen").await;
        (session, csrf_field(&page))
    }

    /// A page's HTML as the signed-in `cookie` sees it.
    async fn page(&self, cookie: &str, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Posts a form as the signed-in `cookie`, its CSRF token added.
    async fn post(
        &self,
        cookie: &str,
        csrf: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = form.to_vec();
        form.push(("csrf", csrf));
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Registers a patient and starts their session (0.4 mg/kg × 70 kg over 40 min: 42 mg/h,
    /// the order 31.5-52.5 mg/h) as the signed-in nurse; the session page's path.
    async fn start_session(&self, cookie: &str, csrf: &str) -> String {
        let patient = [
            ("given_name", "Rosa"),
            ("family_name", "Diaz"),
            ("birth_date", "1984-06-30"),
        ];
        let res = self.post(cookie, csrf, "/screen/patients", &patient).await;
        let checkin = res.headers()[LOCATION].to_str().unwrap().to_owned();
        let start = [
            ("action", "start"),
            ("bp_sys", "120"),
            ("bp_dia", "80"),
            ("weight", "70"),
            ("gad7", "9"),
            ("dose", "0.4"),
            ("minutes", "40"),
            ("conc", "1"),
            ("prescriber", "dr-kim"),
            ("indication", "depression"),
            ("c_escort", "on"),
            ("c_consent", "on"),
            ("c_npo", "on"),
        ];
        let screening = screening_form(&[]);
        let start: Vec<(&str, &str)> = start
            .into_iter()
            .chain(PHQ9_FORM)
            .chain(screening.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        let res = self.post(cookie, csrf, &checkin, &start).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "the session starts");
        res.headers()[LOCATION].to_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_screen_refusals() {
    let (_dir, _edge, edge, c) = room();

    // Signed out: every page sends the browser to sign-in, with the strict policy.
    let res = c
        .http
        .get(format!("{}/screen/patients", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/screen/login");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));

    // A sign-in posted without the form's token is refused, even with the right PIN.
    let (cookie, csrf) = c.login_form().await;
    let res = c.sign_in("", &csrf, "nurse-ana", NURSE_PIN).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = c
        .sign_in(&cookie, &"0".repeat(64), "nurse-ana", NURSE_PIN)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Three wrong PINs make this device wait for the name; the right PIN is then refused too.
    for _ in 0..vigil_edge::throttle::FREE_TRIES {
        let res = c.sign_in(&cookie, &csrf, "nurse-ana", "000000").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.text().await.unwrap().contains("wrong name or PIN"));
    }
    let res = c.sign_in(&cookie, &csrf, "nurse-ana", NURSE_PIN).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&res, "vigil_room").is_none());

    // A colleague still signs in.
    let res = c.sign_in(&cookie, &csrf, "desk-lee", DESK_PIN).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&res, "vigil_room").expect("a session cookie");
    let flags = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("vigil_room="))
        .unwrap()
        .to_owned();
    assert!(
        flags.contains("HttpOnly") && flags.contains("SameSite=Strict"),
        "{flags}"
    );
    let page = c
        .http
        .get(format!("{}/screen", c.base))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Lee Park"));
    let token = csrf_field(&html);

    // Signed in, a form without its token is refused and nothing is registered.
    let screening = screening_form(&[]);
    let post = |path: &str, form: Vec<(&str, String)>| {
        c.http
            .post(format!("{}{path}", c.base))
            .header(COOKIE, &session)
            .form(&form)
            .send()
    };
    let patient = vec![
        ("given_name", "Rosa".to_owned()),
        ("family_name", "Diaz".to_owned()),
        ("birth_date", "1984-06-30".to_owned()),
    ];
    let res = post("/screen/patients", patient.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The front desk registers the patient, but may not start the infusion.
    let mut with_token = patient.clone();
    with_token.push(("csrf", token.clone()));
    let res = post("/screen/patients", with_token).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let checkin = res.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(checkin.ends_with("/checkin"), "{checkin}");
    let start = vec![
        ("csrf", token.clone()),
        ("action", "start".to_owned()),
        ("bp_sys", "120".to_owned()),
        ("bp_dia", "80".to_owned()),
        ("weight", "70".to_owned()),
        ("gad7", "9".to_owned()),
        ("dose", "0.5".to_owned()),
        ("minutes", "40".to_owned()),
        ("conc", "1".to_owned()),
        ("c_escort", "on".to_owned()),
        ("c_consent", "on".to_owned()),
        ("c_npo", "on".to_owned()),
    ];
    let start: Vec<(&str, String)> = start
        .into_iter()
        .chain(PHQ9_FORM.map(|(k, v)| (k, v.to_owned())))
        .chain(screening.iter().map(|(k, v)| (k.as_str(), v.clone())))
        .collect();
    // The review (allowed to the front desk) checks the order against the site's own limit.
    let mut review = start.clone();
    review[1].1 = "review".to_owned();
    let res = post(&checkin, review).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("dose (mg/kg) 0.5 is over the site limit of 0.4"),
        "the site's limit applies"
    );
    let res = post(&checkin, start).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("front desk"));
    let (_, sessions) = edge.get("/api/v1/sessions").await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(0), "{sessions}");
}

/// An EMS transfer ends the running session from the room screen: what happened is required,
/// the front desk may not do it, and afterwards the room is free and the session says how it
/// ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ems_transfer_ends_the_session_from_the_screen() {
    let (_dir, _edge, edge, c) = room();
    let (nurse, token) = c.signed_in("nurse-ana", NURSE_PIN).await;
    let page = c.start_session(&nurse, &token).await;
    let end = format!("{page}/end");
    let ending = |note| [("disposition", "ems_transfer"), ("note", note)];

    // Without what happened, nothing ends; the front desk may not end it at all.
    let res = c.post(&nurse, &token, &end, &ending("  ")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (desk, desk_token) = c.signed_in("desk-lee", DESK_PIN).await;
    let res = c.post(&desk, &desk_token, &end, &ending("gone")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (_, sessions) = edge.get("/api/v1/sessions").await;
    assert_eq!(sessions[0]["state"], "in_progress", "{sessions}");

    // With it, the session ends as aborted and the room is free.
    let what = "chest pain at 20 min; EMS called, handed over at 14:05";
    let res = c.post(&nurse, &token, &end, &ending(what)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, sessions) = edge.get("/api/v1/sessions").await;
    assert_eq!(sessions[0]["state"], "aborted", "{sessions}");
    let html = c.page(&nurse, &page).await;
    assert!(
        html.contains("Transferred by EMS") && html.contains(what),
        "the session says how it ended"
    );
    assert!(!html.contains("id=\"end-session\""), "no second ending");
    let room = c.page(&nurse, "/screen").await;
    assert!(room.contains("id=\"no-session\""), "the room is free");
}

/// Every rate is held to the prescriber's order and the site's limit: a typed 420 for 42 is
/// refused outright, a rate outside the order is refused for the nurse with or without a
/// reason, and passes only with a clinician's reason, which the record keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_outside_the_order_needs_a_clinicians_reason() {
    let (_dir, _edge, edge, c) = room();
    let (nurse, token) = c.signed_in("nurse-ana", NURSE_PIN).await;
    let page = c.start_session(&nurse, &token).await;
    let html = c.page(&nurse, &page).await;
    assert!(
        html.contains("31.5–52.5 mg/h"),
        "the order's range is shown"
    );
    let dose = format!("{page}/dose");
    let rate = |rate, reason| {
        [
            ("action", "rate_change"),
            ("rate", rate),
            ("override_reason", reason),
        ]
    };

    // A typed 420 for 42: over the site's limit, which nothing passes.
    let res = c.post(&nurse, &token, &dose, &rate("420", "")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("over the site limit of 200 mg/h")
    );
    // 60 is outside the order: refused for the nurse, reason or not.
    let res = c.post(&nurse, &token, &dose, &rate("60", "")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("outside the order's 31.5-52.5 mg/h")
    );
    let res = c
        .post(&nurse, &token, &dose, &rate("60", "she asked"))
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("only a clinician"));
    let sid = page.rsplit('/').next().unwrap();
    let (_, view) = edge.get(&format!("/api/v1/sessions/{sid}")).await;
    assert_eq!(
        view["dose_events"],
        serde_json::json!([]),
        "nothing recorded"
    );

    // The clinician's override with a reason passes, and the record says who and why.
    let (dr, dr_token) = c.signed_in("dr-kim", CLINICIAN_PIN).await;
    let why = "tolerating well, prescriber agrees to 60";
    let res = c.post(&dr, &dr_token, &dose, &rate("60", why)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, view) = edge.get(&format!("/api/v1/sessions/{sid}")).await;
    assert_eq!(view["dose_events"][0]["rate_mg_per_h"], 60.0, "{view}");
    let overrides = &view["care"]["overrides"];
    assert_eq!(overrides[0]["by"], "dr-kim", "{view}");
    assert_eq!(overrides[0]["reason"], why, "{view}");
    let html = c.page(&nurse, &page).await;
    assert!(
        html.contains(why) && html.contains("Sam Kim"),
        "shown on the session page"
    );
}

/// An adverse event is recorded apart from the expected effects, with what was given, and a
/// clinician signs off the review; a nurse cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adverse_event_is_recorded_and_reviewed_by_a_clinician() {
    let (_dir, _edge, edge, c) = room();
    let (nurse, token) = c.signed_in("nurse-ana", NURSE_PIN).await;
    let page = c.start_session(&nurse, &token).await;
    let event = [
        ("event", "laryngospasm, resolved with jaw thrust"),
        ("onset_min_ago", "0"),
        ("ended_min_ago", ""),
        ("severity", "severe"),
        ("seriousness", "life_threatening"),
        ("rescue", "oxygen"),
        ("dose", "4 L/min"),
        ("route", "face mask"),
        ("outcome", "resolved"),
    ];
    // Oxygen without a dose is refused, naming it; then the complete record.
    let incomplete: Vec<(&str, &str)> = event
        .iter()
        .map(|&(k, v)| if k == "dose" { (k, "") } else { (k, v) })
        .collect();
    let res = c
        .post(&nurse, &token, &format!("{page}/adverse"), &incomplete)
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("give the dose and the route")
    );
    let res = c
        .post(&nurse, &token, &format!("{page}/adverse"), &event)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let html = c.page(&nurse, &page).await;
    assert!(html.contains("laryngospasm") && html.contains("awaiting a clinician"));
    let sid = page.rsplit('/').next().unwrap();
    let (_, view) = edge.get(&format!("/api/v1/sessions/{sid}")).await;
    let recorded = &view["care"]["adverse_events"][0];
    assert_eq!(recorded["seriousness"], "life_threatening", "{view}");
    assert_eq!(recorded["interventions"][0]["dose"], "4 L/min", "{view}");
    let review = format!("{page}/adverse/{}/review", recorded["id"].as_str().unwrap());
    let res = c.post(&nurse, &token, &review, &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (dr, dr_token) = c.signed_in("dr-kim", CLINICIAN_PIN).await;
    let res = c.post(&dr, &dr_token, &review, &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let html = c.page(&nurse, &page).await;
    assert!(html.contains("reviewed by Sam Kim"), "the review is shown");
    let form = c.page(&nurse, &format!("{page}/form")).await;
    assert!(form.contains("id=\"form-adverse\"") && form.contains("laryngospasm"));
}

/// The central station: behind the sign-in like every page; acknowledging from it needs a
/// nurse or clinician, the form's token, a session in progress here, and (for another room) a
/// peer link, each refusal saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_refusals() {
    let (_dir, _edge, _api, c) = room();
    for path in ["/station", "/station/live"] {
        let res = c
            .http
            .get(format!("{}{path}", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(res.headers()[LOCATION], "/screen/login", "{path}");
    }
    let ack = [("session_id", "s1"), ("advisory_id", "a1")];
    let res = c.post("", "", "/station/rooms/2/ack", &ack).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed out");

    // Signed in, the station shows this room's tile.
    let (desk, desk_csrf) = c.signed_in("desk-lee", DESK_PIN).await;
    let page = c.page(&desk, "/station").await;
    assert!(page.contains("id=\"tile-1\""), "{page}");
    let res = c
        .post(&desk, &desk_csrf, "/station/rooms/1/ack", &ack)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "the front desk");

    let (nurse, csrf) = c.signed_in("nurse-ana", NURSE_PIN).await;
    let res = c
        .post(&nurse, &"0".repeat(64), "/station/rooms/1/ack", &ack)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "a wrong form token");
    let res = c.post(&nurse, &csrf, "/station/rooms/1/ack", &ack).await;
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "no session in progress here"
    );
    let res = c.post(&nurse, &csrf, "/station/rooms/2/ack", &ack).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        res.text().await.unwrap().contains("no peers configured"),
        "another room without peers"
    );
}
