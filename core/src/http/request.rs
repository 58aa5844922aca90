//! The request a handler sees: borrowed views into the connection's read buffer.

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// A request: method, target, headers and body, all borrowed from the connection's input
/// (a chunked body is borrowed from the connection's de-chunking buffer). Nothing is copied
/// or allocated to build it. Valid during the handler call only; copy what must outlive it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) version: u8,
    pub(crate) headers: &'a [httparse::Header<'a>],
    pub(crate) body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target as sent (origin form `/path?query`, absolute form, `*`, or an
    /// authority for `CONNECT`).
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path: the target up to `?`, without scheme and authority for an absolute-form
    /// target.
    #[inline]
    pub fn path(&self) -> &'a str {
        let t = self.target;
        // Origin form (`/…`) is what nearly every request uses: no scheme to strip, and the
        // rarer forms stay out of line.
        let t = if t.starts_with('/') {
            t
        } else {
            strip_authority(t)
        };
        match t.bytes().position(|b| b == b'?') {
            Some(q) => &t[..q],
            None => t,
        }
    }

    /// The query: the target after the first `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        let q = self.target.bytes().position(|b| b == b'?')?;
        Some(&self.target[q + 1..])
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        if self.version == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }

    /// The value of the first header field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// As [`Request::header`], if the value is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header field, in order, as (name, value).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The header field at `index`, in the order received.
    pub fn header_at(&self, index: usize) -> Option<(&'a str, &'a [u8])> {
        self.headers.get(index).map(|h| (h.name, h.value))
    }

    /// The body, complete and de-chunked (empty when there is none).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// The path of a target that is not in origin form: after the scheme and authority of an
/// absolute form (`/` when there is none), or the target itself (`*`, an authority).
#[cold]
fn strip_authority(t: &str) -> &str {
    match t.find("://") {
        Some(i) => {
            // The authority ends at the first `/` or `?` (a `/` in the query is not a path).
            let after = &t[i + 3..];
            match after.find(['/', '?']) {
                Some(j) if after.as_bytes()[j] == b'/' => &after[j..],
                _ => "/",
            }
        }
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> Request<'_> {
        Request {
            method: "GET",
            target,
            version: 1,
            headers: &[],
            body: b"",
        }
    }

    #[test]
    fn path_and_query() {
        assert_eq!(req("/a/b?x=1&y").path(), "/a/b");
        assert_eq!(req("/a/b?x=1&y").query(), Some("x=1&y"));
        assert_eq!(req("/").query(), None);
        assert_eq!(req("http://h:80/p?q").path(), "/p");
        assert_eq!(req("http://h").path(), "/");
        assert_eq!(req("http://h?x=/y").path(), "/");
        assert_eq!(req("http://h?x=/y").query(), Some("x=/y"));
        assert_eq!(req("*").path(), "*");
    }
}
