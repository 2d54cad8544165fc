//! The demo pages in `crates/plenary-sfu/assets/`, compiled into the binary: the room page
//! (`/`), a WHIP publisher and a WHEP viewer, and the script and style they share.

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Content type and body of the demo asset at `path` (the URL path, query stripped).
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let found: (&'static str, &'static [u8]) = match path {
        "/" | "/index.html" => (HTML, include_bytes!("../assets/index.html")),
        "/whip.html" => (HTML, include_bytes!("../assets/whip.html")),
        "/whep.html" => (HTML, include_bytes!("../assets/whep.html")),
        "/common.js" => (JS, include_bytes!("../assets/common.js")),
        "/room.js" => (JS, include_bytes!("../assets/room.js")),
        "/whip.js" => (JS, include_bytes!("../assets/whip.js")),
        "/whep.js" => (JS, include_bytes!("../assets/whep.js")),
        "/style.css" => (CSS, include_bytes!("../assets/style.css")),
        _ => return None,
    };
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::asset;

    /// Every `src="…"` and `href="…"` of a page that points at a local file.
    fn local_refs(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let target = part.split('"').next().unwrap_or("");
                if !target.contains(':') && !target.starts_with('#') {
                    out.push(format!("/{target}"));
                }
            }
        }
        out
    }

    #[test]
    fn pages_and_everything_they_load_are_served() {
        for page in ["/", "/whip.html", "/whep.html"] {
            let (ctype, body) = asset(page).expect("page");
            assert!(ctype.starts_with("text/html"));
            let html = std::str::from_utf8(body).expect("utf-8");
            let refs = local_refs(html);
            assert!(
                refs.len() >= 3,
                "{page} loads its script and style: {refs:?}"
            );
            for r in refs {
                assert!(
                    asset(&r).is_some(),
                    "{page} refers to {r}, which is not served"
                );
            }
        }
        assert_eq!(
            asset("/room.js").map(|a| a.0),
            Some("text/javascript; charset=utf-8")
        );
        assert!(asset("/../Cargo.toml").is_none());
        assert!(asset("/nope.html").is_none());
    }
}
