//! The appliance's local API against bad input, through a real `vigil-edge` process: every
//! refusal is a JSON error with the right status, and nothing is lost or half-written.

mod support;

use serde_json::{Value, json};
use support::{bin, patient_body, session_body, start_edge, write_edge_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_edge_config(
        dir.path(),
        "austin",
        "2",
        "[source]\nkind = \"simulator\"\ntime_factor = 60.0\n",
    );
    let (_edge, http) = start_edge(&config);

    // Unknown patient and session: 404 with a JSON body naming what is missing.
    let (st, body) = http.get("/api/v1/patients/nobody").await;
    assert_eq!(
        (st, body["error"].as_str().unwrap().contains("nobody")),
        (404, true),
        "{body}"
    );
    let (st, body) = http.get("/api/v1/sessions/nothing").await;
    assert_eq!(st, 404, "{body}");
    assert!(body["error"].is_string());
    let (st, body) = http.post("/api/v1/sessions/nothing/stop", &json!({})).await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = http
        .post("/api/v1/sessions", &session_body("nobody", "baseline"))
        .await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = http.get("/no/such/route").await;
    assert_eq!(st, 404, "{body}");
    assert!(body["error"].is_string());

    // Oversized body: 413, and nothing was registered.
    let mut big = patient_body("Big");
    big["family_name"] = json!("x".repeat(100_000));
    let (st, body) = http.post("/api/v1/patients", &big).await;
    assert_eq!(st, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("larger"), "{body}");

    // Malformed JSON and unknown fields: 400 or 422, never 500.
    let (st, body) = http
        .post_raw("/api/v1/patients", b"{\"given_name\": ".to_vec())
        .await;
    assert_eq!(st, 400, "{body}");
    let mut extra = patient_body("Extra");
    extra["favourite_colour"] = json!("blue");
    let (st, body) = http.post("/api/v1/patients", &extra).await;
    assert_eq!(st, 422, "{body}");
    for impossible in ["0000-02-31", "9999-12-31", "1970-02-30"] {
        let mut bad = patient_body("Date");
        bad["birth_date"] = json!(impossible);
        let (st, body) = http.post("/api/v1/patients", &bad).await;
        assert_eq!(st, 422, "{impossible}: {body}");
    }
    let mut bad_course = patient_body("Course");
    bad_course["course"] = json!({"maintenance_interval_days": 2});
    let (st, body) = http.post("/api/v1/patients", &bad_course).await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("7-180 days"),
        "{body}"
    );
    let mut bad_date = patient_body("Date");
    bad_date["birth_date"] = json!("31/12/1970");
    let (st, body) = http.post("/api/v1/patients", &bad_date).await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("birth_date"),
        "{body}"
    );

    // A real patient and session, then values out of range and conflicting states.
    let (st, patient) = http.post("/api/v1/patients", &patient_body("Real")).await;
    assert_eq!(st, 201);
    let pid = patient["id"].as_str().unwrap();
    // A session starts from the prescriber's order.
    let mut unordered = session_body(pid, "baseline");
    unordered.as_object_mut().unwrap().remove("order");
    let (st, body) = http.post("/api/v1/sessions", &unordered).await;
    assert_eq!(st, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("order"), "{body}");
    let mut overdose = session_body(pid, "baseline");
    overdose["protocol"]["dose_mg_per_kg"] = json!(50.0);
    let (st, body) = http.post("/api/v1/sessions", &overdose).await;
    assert_eq!(st, 422, "{body}");
    let (st, session) = http
        .post("/api/v1/sessions", &session_body(pid, "baseline"))
        .await;
    assert_eq!(st, 201, "{session}");
    let sid = session["id"].as_str().unwrap();
    let (st, body) = http
        .post("/api/v1/sessions", &session_body(pid, "baseline"))
        .await;
    assert_eq!(st, 409, "a second session in one room: {body}");
    let events = format!("/api/v1/sessions/{sid}/events");
    let (_, view) = http.get(&format!("/api/v1/sessions/{sid}")).await;
    assert_eq!(view["care"]["order"]["prescriber"], "dr-kim", "{view}");
    assert_eq!(view["care"]["order"]["rate_max"], 65.6, "{view}");

    // The prescriber's order holds every rate: 0.5 mg/kg × 70 kg over 40 min is 52.5 mg/h,
    // the order 39.4-65.6 mg/h, the site's highest 200 mg/h. Each refusal names its limit.
    for (rate, reason, says) in [
        (525.0, None, "over the site limit of 200 mg/h"),
        (80.0, None, "outside the order's 39.4-65.6 mg/h"),
        // The API's credential is not a clinician: its override does not count.
        (80.0, Some("patient tolerating well"), "only a clinician"),
    ] {
        let body = json!({"type": "dose", "action": "rate_change", "rate_mg_per_h": rate,
            "override_reason": reason});
        let (st, body) = http.post(&events, &body).await;
        assert_eq!(st, 422, "{rate}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{rate}: {error}");
    }
    let (st, body) = http
        .post(
            &events,
            &json!({"type": "dose", "action": "rate_change", "rate_mg_per_h": 60.0}),
        )
        .await;
    assert_eq!(st, 201, "within the order: {body}");
    let rates: Vec<f64> = body["dose_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rate_mg_per_h"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, [60.0], "only the accepted rate is recorded");
    let (st, body) = http
        .post(
            &events,
            &json!({"type": "score", "instrument": "phq9", "phase": "pre", "value": 99}),
        )
        .await;
    assert_eq!(st, 422, "{body}");
    // Discharge through the API: malformed items are 422; the gate's refusals are 409, each
    // reason named at once.
    let home = |items: Value| {
        json!({"type": "discharge", "aldrete_items": items, "escort": "Ana Diaz",
            "escort_phone": "+1 512 555 0100", "escort_relationship": "sister",
            "no_driving_ack": true})
    };
    let (st, body) = http.post(&events, &home(json!([2, 2, 3, 2, 2]))).await;
    assert_eq!(st, 422, "an Aldrete item of 3: {body}");
    let (st, body) = http.post(&events, &home(json!([2, 2, 1, 1, 1]))).await;
    assert_eq!(st, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    for reason in [
        "the infusion has not been stopped",
        "modified Aldrete 7 is under 9",
        "record the CADSS after the infusion",
        "take a blood pressure before discharge",
    ] {
        assert!(error.contains(reason), "{reason}: {error}");
    }
    let checkpoint = json!({"type": "checkpoint", "checkpoint": "before_start", "systolic": 126,
        "diastolic": 81, "sedation_scale": "moaas", "sedation": 5});
    let (st, body) = http.post(&events, &checkpoint).await;
    assert_eq!(st, 201, "{body}");
    let mut wrong = checkpoint.clone();
    wrong["sedation"] = json!(9);
    let (st, body) = http.post(&events, &wrong).await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("MOAA/S 9 is outside 0..5"),
        "{body}"
    );
    // An adverse event through the API: a death must be "fatal"; a consistent record is kept.
    let mut adverse = json!({"type": "adverse_event", "event": "cardiac arrest", "severity": "severe",
        "seriousness": "death", "outcome": "resolved",
        "interventions": [{"rescue": "other", "dose": "1 mg", "route": "iv"}]});
    let (st, body) = http.post(&events, &adverse).await;
    assert_eq!(st, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("fatal"), "{body}");
    adverse["seriousness"] = json!("hospitalisation");
    adverse["outcome"] = json!("transferred");
    let (st, body) = http.post(&events, &adverse).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = http
        .post(
            &events,
            &json!({"type": "acknowledge", "advisory_id": "nope"}),
        )
        .await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = http.post(&events, &json!({"type": "teleport"})).await;
    assert_eq!(st, 422, "{body}");
    let (st, body) = http
        .get(&format!("/api/v1/sessions/{sid}/vitals?channel=brainwaves"))
        .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("hr"),
        "lists the channels: {body}"
    );
    let (st, body) = http
        .get(&format!(
            "/api/v1/sessions/{sid}/vitals?channel=hr&from=10&to=5"
        ))
        .await;
    assert_eq!(st, 400, "{body}");

    // The good requests went through and are all there.
    let (st, body) = http
        .post(&events, &json!({"type": "note", "text": "calm"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, stopped) = http
        .post(&format!("/api/v1/sessions/{sid}/stop"), &json!({}))
        .await;
    assert_eq!(st, 200, "{stopped}");
    let (st, body) = http
        .post(&format!("/api/v1/sessions/{sid}/stop"), &json!({}))
        .await;
    assert_eq!(st, 409, "stopping twice: {body}");
    let (_, summary) = http.get(&format!("/api/v1/sessions/{sid}")).await;
    assert_eq!(summary["state"], json!("completed"));
    assert_eq!(
        summary["notes"],
        json!("[local] calm\n"),
        "by comes from the token"
    );
    assert!(
        summary["scores"].as_array().unwrap().is_empty(),
        "the refused score was not stored"
    );
    let (_, list) = http.get("/api/v1/sessions").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn config_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_edge_config(dir.path(), "austin", "1", "chunk_period_s = 0\n");
    let out = std::process::Command::new(bin("vigil-edge"))
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(config.to_str().unwrap()) && stderr.contains("chunk_period_s"),
        "{stderr}"
    );
}
