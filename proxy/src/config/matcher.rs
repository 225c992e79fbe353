//! String, regex, header and query-parameter matchers (`envoy.type.matcher.v3`), converted once.

use envoy_types::pb::envoy::{
    config::route::v3::{
        HeaderMatcher as XdsHeaderMatcher, QueryParameterMatcher as XdsQueryParameterMatcher,
        header_matcher::HeaderMatchSpecifier,
        query_parameter_matcher::QueryParameterMatchSpecifier,
    },
    r#type::matcher::v3::{
        RegexMatcher as XdsRegexMatcher, StringMatcher as XdsStringMatcher,
        string_matcher::MatchPattern,
    },
};
use http::HeaderName;

use super::error::{Ctx, Path};

/// A compiled regular expression that must match the whole input (Envoy's RE2 semantics for
/// `safe_regex`).
#[derive(Clone, Debug)]
pub struct FullRegex {
    source: String,
    regex: regex::Regex,
}

/// A regular expression that matches anywhere in the input (for rewrites).
#[derive(Clone, Debug)]
pub struct Regex {
    source: String,
    regex: regex::Regex,
}

/// `StringMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringMatcher {
    /// How to compare.
    pub kind: StringMatch,
    /// Compare ASCII case-insensitively (not for regexes, as in Envoy).
    pub ignore_case: bool,
}

/// The comparison of a [`StringMatcher`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// The whole value.
    Exact(String),
    /// The start of the value.
    Prefix(String),
    /// The end of the value.
    Suffix(String),
    /// Anywhere in the value.
    Contains(String),
    /// The whole value matches the regex.
    Regex(FullRegex),
}

/// `HeaderMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// The header, lowercase.
    pub name: HeaderName,
    /// The test applied to the header's value (all values joined with `,`).
    pub kind: HeaderMatch,
    /// Match when the test fails.
    pub invert: bool,
    /// A missing header is tested as an empty value instead of not matching.
    pub treat_missing_as_empty: bool,
}

/// What a [`HeaderMatcher`] tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `present_match`: the header is there (true) or absent (false).
    Present(bool),
    /// `range_match`: the value is an integer in `[start, end)`.
    Range(i64, i64),
    /// A string comparison (`exact_match`, `prefix_match`, ... or `string_match`).
    String(StringMatcher),
}

/// `QueryParameterMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParameterMatcher {
    /// The parameter's name.
    pub name: String,
    /// `None`: the parameter is present; otherwise its (first) value must match.
    pub value: Option<StringMatcher>,
}

// === impl FullRegex ===

impl FullRegex {
    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }

    /// The expression as configured.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl PartialEq for FullRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for FullRegex {}

// === impl Regex ===

impl Regex {
    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.regex
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Regex {}

/// Envoy compiles RE2 programs of at most 100 instructions by default; Rust's regex measures in
/// bytes, so the bound is set generously while still refusing pathological expressions.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern`, the operator's `source` possibly anchored; errors speak of `source`.
fn compile(ctx: &mut Ctx, path: &Path, pattern: &str, source: &str) -> Option<regex::Regex> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    match build(pattern) {
        Ok(r) => Some(r),
        Err(e) => {
            // The operator's own expression explains the error in the operator's terms.
            let e = build(source).err().unwrap_or(e);
            ctx.error(path, format!("invalid regex '{source}': {e}"));
            None
        }
    }
}

/// Converts a `RegexMatcher` used as a whole-value match.
pub(crate) fn full_regex(ctx: &mut Ctx, path: &Path, m: &XdsRegexMatcher) -> Option<FullRegex> {
    // `engine_type` only names RE2 (deprecated); any value means the same engine.
    let source = m.regex.clone();
    let regex = compile(
        ctx,
        &path.field("regex"),
        &format!("^(?:{source})$"),
        &source,
    )?;
    Some(FullRegex { source, regex })
}

/// Converts a `RegexMatcher` used to find and substitute.
pub(crate) fn search_regex(ctx: &mut Ctx, path: &Path, m: &XdsRegexMatcher) -> Option<Regex> {
    let source = m.regex.clone();
    let regex = compile(ctx, &path.field("regex"), &source, &source)?;
    Some(Regex { source, regex })
}

/// Converts a `StringMatcher`.
pub(crate) fn string_matcher(
    ctx: &mut Ctx,
    path: &Path,
    m: &XdsStringMatcher,
) -> Option<StringMatcher> {
    let kind = match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(non_empty(ctx, path, "prefix", s)?),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(non_empty(ctx, path, "suffix", s)?),
        Some(MatchPattern::Contains(s)) => {
            StringMatch::Contains(non_empty(ctx, path, "contains", s)?)
        }
        Some(MatchPattern::SafeRegex(r)) => {
            StringMatch::Regex(full_regex(ctx, &path.field("safe_regex"), r)?)
        }
        Some(MatchPattern::Custom(c)) => {
            ctx.error(
                &path.field("custom"),
                format!(
                    "custom string matcher '{}' is not supported by Skiff",
                    c.name
                ),
            );
            return None;
        }
        None => {
            ctx.error(
                path,
                "a string matcher needs one of exact, prefix, suffix, contains, safe_regex",
            );
            return None;
        }
    };
    if m.ignore_case && matches!(kind, StringMatch::Regex(_)) {
        ctx.error(
            &path.field("ignore_case"),
            "ignore_case has no effect on safe_regex (Envoy refuses it too)",
        );
        return None;
    }
    let kind = if m.ignore_case { lowercase(kind) } else { kind };
    Some(StringMatcher {
        kind,
        ignore_case: m.ignore_case,
    })
}

fn non_empty(ctx: &mut Ctx, path: &Path, field: &str, s: &str) -> Option<String> {
    if s.is_empty() {
        ctx.error(&path.field(field), "must not be empty");
        return None;
    }
    Some(s.to_string())
}

fn lowercase(kind: StringMatch) -> StringMatch {
    match kind {
        StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
        StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
        StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
        StringMatch::Contains(s) => StringMatch::Contains(s.to_ascii_lowercase()),
        regex @ StringMatch::Regex(_) => regex,
    }
}

/// Converts a header name from configuration, refusing invalid ones.
pub(crate) fn header_name(ctx: &mut Ctx, path: &Path, name: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            ctx.error(path, format!("'{name}' is not a valid header name"));
            None
        }
    }
}

/// Converts a route's `HeaderMatcher`.
#[allow(deprecated)] // the *_match shortcuts are deprecated but still used by control planes
pub(crate) fn header_matcher(
    ctx: &mut Ctx,
    path: &Path,
    m: &XdsHeaderMatcher,
) -> Option<HeaderMatcher> {
    let XdsHeaderMatcher {
        name,
        invert_match,
        treat_missing_header_as_empty,
        header_match_specifier,
    } = m;
    let name = header_name(ctx, &path.field("name"), name)?;
    let string = |kind| {
        Some(HeaderMatch::String(StringMatcher {
            kind,
            ignore_case: false,
        }))
    };
    let kind =
        match header_match_specifier {
            // No specifier: the header must be present (Envoy's default).
            None => Some(HeaderMatch::Present(true)),
            Some(HeaderMatchSpecifier::PresentMatch(p)) => Some(HeaderMatch::Present(*p)),
            Some(HeaderMatchSpecifier::ExactMatch(s)) => string(StringMatch::Exact(s.clone())),
            Some(HeaderMatchSpecifier::PrefixMatch(s)) => string(StringMatch::Prefix(non_empty(
                ctx,
                path,
                "prefix_match",
                s,
            )?)),
            Some(HeaderMatchSpecifier::SuffixMatch(s)) => string(StringMatch::Suffix(non_empty(
                ctx,
                path,
                "suffix_match",
                s,
            )?)),
            Some(HeaderMatchSpecifier::ContainsMatch(s)) => string(StringMatch::Contains(
                non_empty(ctx, path, "contains_match", s)?,
            )),
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => string(StringMatch::Regex(
                full_regex(ctx, &path.field("safe_regex_match"), r)?,
            )),
            Some(HeaderMatchSpecifier::RangeMatch(r)) => {
                if r.start >= r.end {
                    ctx.error(
                        &path.field("range_match"),
                        format!("[{}, {}) is an empty range", r.start, r.end),
                    );
                    return None;
                }
                Some(HeaderMatch::Range(r.start, r.end))
            }
            Some(HeaderMatchSpecifier::StringMatch(s)) => Some(HeaderMatch::String(
                string_matcher(ctx, &path.field("string_match"), s)?,
            )),
        }?;
    Some(HeaderMatcher {
        name,
        kind,
        invert: *invert_match,
        treat_missing_as_empty: *treat_missing_header_as_empty,
    })
}

/// Converts a route's `QueryParameterMatcher`.
pub(crate) fn query_matcher(
    ctx: &mut Ctx,
    path: &Path,
    m: &XdsQueryParameterMatcher,
) -> Option<QueryParameterMatcher> {
    if m.name.is_empty() {
        ctx.error(&path.field("name"), "a query parameter name is required");
        return None;
    }
    let value = match &m.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            Some(string_matcher(ctx, &path.field("string_match"), s)?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
        Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
            ctx.error(
                &path.field("present_match"),
                "present_match: false is not supported (Envoy requires true)",
            );
            return None;
        }
    };
    Some(QueryParameterMatcher {
        name: m.name.clone(),
        value,
    })
}

// === impl StringMatcher ===

impl StringMatcher {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        if self.ignore_case {
            // Patterns were lowercased at conversion; compare without allocating.
            return match &self.kind {
                StringMatch::Exact(p) => value.eq_ignore_ascii_case(p),
                StringMatch::Prefix(p) => value
                    .get(..p.len())
                    .is_some_and(|v| v.eq_ignore_ascii_case(p)),
                StringMatch::Suffix(p) => value
                    .len()
                    .checked_sub(p.len())
                    .and_then(|start| value.get(start..))
                    .is_some_and(|v| v.eq_ignore_ascii_case(p)),
                StringMatch::Contains(p) => value.to_ascii_lowercase().contains(p.as_str()),
                StringMatch::Regex(r) => r.is_match(value),
            };
        }
        match &self.kind {
            StringMatch::Exact(p) => value == p,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Suffix(p) => value.ends_with(p.as_str()),
            StringMatch::Contains(p) => value.contains(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}
