//! Speech pipeline end to end: voice and keyword events, the Silero and energy VADs.

use super::harness::*;

#[test]
fn speech_events_at_the_right_times() {
    let dir = tempfile::tempdir().unwrap();
    let body = "device = \"mic1\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\", \"no\", \"stop\", \"go\"]\n";
    let cfg = write_config(dir.path(), body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let ev = alerts(&lines);
    // Where the word is in yes_1000ms.wav: first and last 10 ms frame above -40 dBFS.
    let yes = hound::WavReader::open(root().join("models/kws/yes_1000ms.wav")).unwrap();
    let s: Vec<f32> = yes
        .into_samples::<i16>()
        .map(|v| v.unwrap() as f32 / 32768.0)
        .collect();
    let loud: Vec<usize> = s
        .chunks(160)
        .enumerate()
        .filter(|(_, c)| {
            10.0 * (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32 + 1e-12).log10() > -40.0
        })
        .map(|(i, _)| i)
        .collect();
    let (on, off) = (
        loud[0] as f64 * 0.01,
        (loud[loud.len() - 1] + 1) as f64 * 0.01,
    );
    for clip_start in [1.0, 5.0] {
        let (won, woff) = (clip_start + on, clip_start + off);
        let near = |t: &Value, want: f64| (t.as_f64().unwrap() - want).abs() <= 0.3;
        assert!(
            ev.iter().any(|v| v["kind"] == "voice"
                && v["type"] == "new"
                && near(&v["stream_time"], won)),
            "voice start near {won}: {ev:#?}"
        );
        assert!(
            ev.iter().any(|v| v["kind"] == "voice"
                && v["type"] == "end"
                && near(&v["stream_time"], woff)),
            "voice end near {woff}: {ev:#?}"
        );
        let centre = (won + woff) / 2.0;
        assert!(
            ev.iter().any(|v| v["kind"] == "keyword"
                && v["label"] == "yes"
                && near(&v["stream_time"], centre)),
            "keyword yes near {centre}: {ev:#?}"
        );
    }
    let keywords = ev.iter().filter(|v| v["kind"] == "keyword").count();
    assert_eq!(keywords, 2, "no keyword in silence or noise: {ev:#?}");
}

/// Per-frame speech probabilities of `vad` over `audio` (whole frames).
fn probabilities(vad: &mut dyn Vad, audio: &[f32]) -> Vec<f32> {
    let n = vad.frame_len();
    audio
        .chunks_exact(n)
        .map(|f| vad.speech_probability(f))
        .collect()
}

#[test]
fn silero_vad_tells_speech_from_noise_the_energy_vad_calls_speech() {
    let a = assets();
    let model = strix_runtime::Model::load(a.dir.join("vad.strix")).unwrap();
    let mut silero = SileroVad::new(&model).unwrap();
    assert_eq!(silero.frame_len(), 512, "from the model's [1, 576] input");
    let mut energy = EnergyVad::new(-40.0, 0.5);
    let frac = |p: &[f32]| p.iter().filter(|&&v| v >= 0.5).count() as f32 / p.len() as f32;
    // Loud noise (the shipped clip, and sox brown noise): the energy VAD calls
    // much of it speech, which is the case the model exists for.
    let brown = a.dir.join("brown.wav");
    run_ok(
        Command::new("sox")
            .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
            .arg(&brown)
            .args(["synth", "2", "brownnoise", "vol", "0.5"]),
    );
    for noise in [root().join("models/kws/noise_1000ms.wav"), brown] {
        let x = wav(&noise);
        let e = probabilities(&mut energy, &x);
        silero.reset();
        let s = probabilities(&mut silero, &x);
        eprintln!(
            "{}: energy VAD speech frames {:.2}, Silero max p {:.3}",
            noise.display(),
            frac(&e),
            s.iter().copied().fold(0.0, f32::max)
        );
        assert!(frac(&e) >= 0.5, "{}: energy VAD {e:?}", noise.display());
        assert_eq!(frac(&s), 0.0, "{}: Silero {s:?}", noise.display());
    }
    // Speech: the shipped "yes" and the 60 s speech file.
    silero.reset();
    let yes = probabilities(&mut silero, &wav(&root().join("models/kws/yes_1000ms.wav")));
    assert!(
        yes.iter().any(|&p| p > 0.8),
        "yes clip is speech somewhere: {yes:?}"
    );
    silero.reset();
    let long = probabilities(&mut silero, &wav(&root().join("models/vad/speech_60s.wav")));
    assert!(frac(&long) > 0.7, "60 s of speech: {}", frac(&long));
}

#[test]
fn speech_events_with_the_silero_vad_skip_the_noise() {
    let dir = tempfile::tempdir().unwrap();
    let body = "device = \"mic1\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\", \"no\", \"stop\", \"go\"]\n[speech.vad]\nmodel = \"@VAD@\"\n";
    let cfg = write_config(dir.path(), body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let ev = alerts(&lines);
    let starts: Vec<f64> = ev
        .iter()
        .filter(|v| v["kind"] == "voice" && v["type"] == "new")
        .map(|v| v["stream_time"].as_f64().unwrap())
        .collect();
    eprintln!("Silero voice starts: {starts:?}");
    // The two "yes" clips start at 1 s and 5 s; the noise fills 3..4 s.
    for clip in [1.0, 5.0] {
        assert!(
            starts.iter().any(|&t| (clip..clip + 1.0).contains(&t)),
            "voice in the yes clip at {clip} s: {ev:#?}"
        );
    }
    assert!(
        !starts.iter().any(|&t| (2.9..4.1).contains(&t)),
        "no voice in the noise: {ev:#?}"
    );
    let keywords: Vec<&Value> = ev.iter().filter(|v| v["kind"] == "keyword").collect();
    assert_eq!(keywords.len(), 2, "{ev:#?}");
    assert!(keywords.iter().all(|v| v["label"] == "yes"), "{ev:#?}");
}
