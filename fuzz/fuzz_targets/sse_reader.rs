//! The stream reader (src/tap) on arbitrary bytes cut at arbitrary places:
//! it never panics, learns the same whatever the chunking, and after its
//! resync bytes an appended event always reads whole.
#![no_main]

use codex_sidecar::tap::sse::{Event, Interest, Scanner};
use codex_sidecar::tap::{BodyKind, Observer};
use libfuzzer_sys::fuzz_target;

fn keep_all(_: &[u8]) -> Interest {
    Interest::Keep
}

fn learned(o: &Observer) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?}",
        o.model(),
        o.response_id(),
        o.usage(),
        o.terminal(),
        o.error()
    )
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the cut points, the rest is the body.
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    for kind in [BodyKind::Sse, BodyKind::Json] {
        let mut whole = Observer::new(kind);
        whole.feed(body);
        whole.finish();
        let mut cut = Observer::new(kind);
        let step = usize::from(seed % 17) + 1;
        let mut at = 0;
        let mut n = 0usize;
        while at < body.len() {
            n += 1;
            let len = (step * n) % 23 + 1;
            let end = (at + len).min(body.len());
            cut.feed(&body[at..end]);
            at = end;
        }
        cut.finish();
        assert_eq!(
            learned(&whole),
            learned(&cut),
            "chunking changed what was learned"
        );
    }
    let mut s = Scanner::new(keep_all);
    let mut last: Option<(Option<Vec<u8>>, Vec<u8>)> = None;
    let mut sink = |e: Event<'_>| last = Some((e.name.map(<[u8]>::to_vec), e.data.to_vec()));
    s.feed(body, &mut sink);
    let resync = s.resync();
    s.feed(resync, &mut sink);
    s.feed(b"event: sidecar\ndata: {\"ok\":1}\n\n", &mut sink);
    assert_eq!(
        last,
        Some((Some(b"sidecar".to_vec()), b"{\"ok\":1}".to_vec())),
        "the appended event did not read whole"
    );
});
