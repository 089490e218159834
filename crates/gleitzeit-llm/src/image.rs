//! Image encodings the APIs expect: Ollama takes bare base64, OpenAI takes a `data:` URL
//! (or a plain https URL), Anthropic a base64 source with its media type. Callers may hand in
//! either form.

/// The bare base64 of an image given as base64 or as a base64 `data:` URL.
pub(crate) fn bare_base64(image: &str) -> &str {
    if image.starts_with("data:") {
        if let Some((_, data)) = image.split_once(";base64,") {
            return data;
        }
    }
    image
}

/// A URL for OpenAI's `image_url` part: `data:` and `http(s)` URLs pass through; bare base64
/// becomes a `data:` URL with the media type read from the image's first bytes.
pub(crate) fn data_url(image: &str) -> String {
    if image.starts_with("data:") || image.starts_with("https://") || image.starts_with("http://") {
        return image.to_owned();
    }
    format!("data:{};base64,{}", media_type(image), image)
}

/// The media type of a base64 image, from the base64 of its magic number.
pub(crate) fn media_type(b64: &str) -> &'static str {
    if b64.starts_with("/9j/") {
        "image/jpeg"
    } else if b64.starts_with("R0lGOD") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        // PNG (`iVBORw0KGgo`) and anything unrecognised: servers sniff the bytes themselves.
        "image/png"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(bare_base64("data:image/png;base64,iVBORw0"), "iVBORw0");
        assert_eq!(bare_base64("iVBORw0"), "iVBORw0");
        assert_eq!(data_url("iVBORw0KGgo"), "data:image/png;base64,iVBORw0KGgo");
        assert_eq!(data_url("/9j/4AAQ"), "data:image/jpeg;base64,/9j/4AAQ");
        assert_eq!(data_url("R0lGODlh"), "data:image/gif;base64,R0lGODlh");
        assert_eq!(data_url("UklGRiQ"), "data:image/webp;base64,UklGRiQ");
        assert_eq!(
            data_url("data:image/gif;base64,xx"),
            "data:image/gif;base64,xx"
        );
        assert_eq!(data_url("https://x/y.png"), "https://x/y.png");
    }
}
