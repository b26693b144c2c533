//! Cases mirror upstream `libcalico-go/lib/selector/parser/parser_test.go` plus our error
//! positions and the nesting limit.

use std::collections::BTreeMap;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

/// (selector, label sets it matches, label sets it does not match)
type Case = (
    &'static str,
    &'static [&'static [(&'static str, &'static str)]],
    &'static [&'static [(&'static str, &'static str)]],
);

const MATCH_CASES: &[Case] = &[
    (
        r#"a == "b""#,
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("c", "d")]],
    ),
    (
        r#"a == "b" && c == "d""#,
        &[&[("a", "b"), ("c", "d")]],
        &[
            &[],
            &[("a", "b"), ("c", "e")],
            &[("a", "c"), ("c", "d")],
            &[("c", "d")],
            &[("a", "b")],
        ],
    ),
    (
        r#"a == "b" || c == "d""#,
        &[&[("a", "b"), ("c", "d")], &[("a", "b")], &[("c", "d")]],
        &[&[], &[("a", "e"), ("c", "e")], &[("c", "e")], &[("a", "e")]],
    ),
    (
        r#"a in {"'", '"', "c"}"#,
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
        &[&[], &[("a", "e")]],
    ),
    (
        r#"a not in {"'", '"', "c"}"#,
        &[&[], &[("a", "e")]],
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
    ),
    ("a == 'a'", &[&[("a", "a")]], &[&[("a", "b")], &[]]),
    (r#"a != "b""#, &[&[("a", "a")], &[]], &[&[("a", "b")]]),
    (
        r#"a contains "a""#,
        &[&[("a", "a")], &[("a", "bab")]],
        &[&[], &[("a", "b")], &[("b", "aaa")]],
    ),
    (
        r#"a starts with "a""#,
        &[&[("a", "a")], &[("a", "abb")]],
        &[&[], &[("a", "baa")], &[("b", "a")]],
    ),
    (
        r#"a ends with "a""#,
        &[&[("a", "a")], &[("a", "bba")]],
        &[&[], &[("a", "aab")], &[("b", "a")]],
    ),
    ("a startswith 'x'", &[&[("a", "xy")]], &[&[("a", "yx")]]),
    ("a endswith 'x'", &[&[("a", "yx")]], &[&[("a", "xy")]]),
    ("a notin {'x'}", &[&[("a", "y")], &[]], &[&[("a", "x")]]),
    ("a in {}", &[], &[&[], &[("a", "")]]),
    ("a not in {}", &[&[], &[("a", "")]], &[]),
    ("a in {'x',}", &[&[("a", "x")]], &[&[("a", "y")]]),
    ("a == ''", &[&[("a", "")]], &[&[], &[("a", "x")]]),
    (r#"!a in {"a"}"#, &[&[("a", "b")], &[]], &[&[("a", "a")]]),
    ("has(a)", &[&[("a", "b")], &[("a", "")]], &[&[("b", "a")]]),
    ("has( a )", &[&[("a", "b")]], &[&[]]),
    ("!has(a)", &[&[("b", "b")]], &[&[("a", "b")]]),
    ("!!has(b)", &[&[("b", "x")]], &[&[("a", "b")]]),
    ("!!! has(a)", &[&[]], &[&[("a", "b")]]),
    ("! !!has(a)", &[&[]], &[&[("a", "b")]]),
    ("", &[&[], &[("a", "b")]], &[]),
    (" ", &[&[]], &[]),
    (" all()", &[&[], &[("a", "b")]], &[]),
    ("all( )", &[&[]], &[]),
    ("global()", &[&[], &[("a", "b")]], &[]),
    ("!all()", &[], &[&[]]),
    (
        "a != 'a1' && !b == 'b1'",
        &[&[("b", "b2")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "has(a) && !has(b)",
        &[&[("a", "a")]],
        &[&[("a", "a"), ("b", "b")]],
    ),
    (
        "!(!has(a) || has(b))",
        &[&[("a", "a")]],
        &[&[("b", "b")], &[]],
    ),
    (
        "a != 'a1' || b != 'b1'",
        &[&[("a", "a1")]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "! a == 'a1' || ! b == 'b1'",
        &[&[]],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    // Labels may hold '/', '.', '-', '_' and start with a digit.
    (
        "app.kubernetes.io/name == 'web'",
        &[&[("app.kubernetes.io/name", "web")]],
        &[&[("name", "web")]],
    ),
    ("9x-y_z == 'v'", &[&[("9x-y_z", "v")]], &[]),
    // Operator words are labels where no operator is expected.
    (
        "in == 'x' && has(not)",
        &[&[("in", "x"), ("not", "")]],
        &[&[("in", "x")]],
    ),
    ("a in{'b'}", &[&[("a", "b")]], &[]),
    // Newlines from YAML block scalars are whitespace.
    (
        "a == 'b'\n&& c == 'd'\n",
        &[&[("a", "b"), ("c", "d")]],
        &[&[("a", "b")]],
    ),
    // Values may hold any characters except their own quote.
    ("a == 'x y && z'", &[&[("a", "x y && z")]], &[&[("a", "x")]]),
];

#[test]
fn matching_follows_upstream() {
    for (text, yes, no) in MATCH_CASES {
        let s = sel(text);
        // The canonical form must mean the same thing.
        let canon = sel(&s.to_string());
        for set in *yes {
            let l = labels(set);
            assert!(s.matches(&l), "{text:?} should match {l:?}");
            assert!(canon.matches(&l), "canonical {canon} should match {l:?}");
        }
        for set in *no {
            let l = labels(set);
            assert!(!s.matches(&l), "{text:?} should not match {l:?}");
            assert!(
                !canon.matches(&l),
                "canonical {canon} should not match {l:?}"
            );
        }
    }
}

#[test]
fn and_binds_tighter_than_or() {
    // a || b && c  ==  a || (b && c)
    let s = sel("a == '1' || b == '1' && c == '1'");
    assert!(s.matches(&labels(&[("a", "1")])));
    assert!(!s.matches(&labels(&[("b", "1")])));
    assert!(s.matches(&labels(&[("b", "1"), ("c", "1")])));
    assert_eq!(s.to_string(), r#"(a == "1" || (b == "1" && c == "1"))"#);

    // a && b || c  ==  (a && b) || c
    let s = sel("a == '1' && b == '1' || c == '1'");
    assert!(s.matches(&labels(&[("c", "1")])));
    assert!(!s.matches(&labels(&[("a", "1")])));
    assert_eq!(s.to_string(), r#"((a == "1" && b == "1") || c == "1")"#);

    // Parentheses override.
    let s = sel("a == '1' && (b == '1' || c == '1')");
    assert!(!s.matches(&labels(&[("c", "1")])));
    assert!(s.matches(&labels(&[("a", "1"), ("c", "1")])));
}

#[test]
fn negation_applies_to_one_operation() {
    let s = sel("!a == 'x' && b == 'y'");
    assert_eq!(s.to_string(), r#"(!a == "x" && b == "y")"#);
    assert!(s.matches(&labels(&[("b", "y")])));
    assert!(!s.matches(&labels(&[("a", "x"), ("b", "y")])));
    let s = sel("!(a == 'x' && b == 'y')");
    assert!(s.matches(&labels(&[("a", "x")])));
    assert!(!s.matches(&labels(&[("a", "x"), ("b", "y")])));
}

#[test]
fn canonical_form_matches_upstream() {
    // upstream canonicalisationTests
    let cases = [
        ("", "all()"),
        (" all() ", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
        (r#"a == "'""#, r#"a == "'""#),
        (r#"a == '"'"#, r#"a == '"'"#),
        (r#"a contains '"'"#, r#"a contains '"'"#),
        (r#"a startswith '"'"#, r#"a starts with '"'"#),
        (r#"a endswith "'""#, r#"a ends with "'""#),
        (r#"a!='"'"#, r#"a != '"'"#),
        (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
        (
            r#"a in {"z", "z", "x", "y", "x", "a"}"#,
            r#"a in {"a", "x", "y", "z"}"#,
        ),
        ("a not   in {'b'}", r#"a not in {"b"}"#),
        ("!!has(a)", "has(a)"),
        ("global()", "global()"),
        (
            "a == 'b' && c == 'd' && e == 'f'",
            r#"(a == "b" && c == "d" && e == "f")"#,
        ),
        ("!(k == 'v')", r#"!k == "v""#),
    ];
    for (input, want) in cases {
        let s = sel(input);
        assert_eq!(s.to_string(), want, "canonical form of {input:?}");
        let again = sel(want);
        assert_eq!(again.to_string(), want, "canonical form must round-trip");
        assert_eq!(again, s, "canonical form must parse to the same tree");
    }
}

#[test]
fn structural_equality_ignores_spelling() {
    assert_eq!(sel("a == 'b'"), sel(r#"a=="b""#));
    assert_eq!(sel("x in {'b', 'a'}"), sel(r#"x in {"a","b","a"}"#));
    assert_ne!(sel("a == 'b'"), sel("a != 'b'"));
    assert!(sel("").is_all() && sel("all()").is_all() && Selector::default().is_all());
    assert_eq!("has(x)".parse::<Selector>().unwrap(), sel("has(x)"));
}

#[test]
fn rejects_bad_selectors() {
    // upstream badSelectors, all of which must fail
    let bad = [
        "b == b",
        "b contains b",
        "b starts with b",
        "b ends with b",
        "'b1' == b",
        "b",
        "a b",
        "!",
        r#"foo == "bar" &"#,
        r#"foo == "bar" |"#,
        "foo != ||",
        r#"foo in {"", ||"#,
        r#"foo in """#,
        r#""FOO"#,
        r#""FOO'"#,
        "'FOO",
        "(",
        r#"(a == "foo""#,
        ")",
        "()",
        "%",
        r#"a == "b" && %"#,
        r#"a == "b" || %"#,
        "a ",
        "has(foo) &&",
        // and a few of our own
        "has(a",
        "has()",
        "has (a)",
        "all(x)",
        "global",
        "a = 'b'",
        "a containsx 'b'",
        "a in {'b' 'c'}",
        "a in 'b'",
        "a == 'b' c == 'd'",
        "has(a) == 'b'",
        "a == 'é' && é == 'x'",
        "a == 'b')",
    ];
    for text in bad {
        assert!(
            Selector::parse(text).is_err(),
            "{text:?} should be rejected"
        );
    }
}

#[test]
fn errors_say_where_and_what() {
    let cases = [
        ("a == ", 5, r#"expected a quoted value at position 5"#),
        (
            "b == b",
            5,
            r#"expected a quoted value, found label "b" at position 5"#,
        ),
        ("'FOO", 0, r#"unterminated quoted string at position 0"#),
        (
            "a == 'b' && %",
            12,
            r#"unexpected character '%' at position 12"#,
        ),
        ("a = 'b'", 2, r#"expected '==', found '=' at position 2"#),
        ("(a == 'b'", 9, r#"expected ')' at position 9"#),
        (
            "a == 'b' )",
            9,
            r#"expected '&&', '||' or the end of the selector, found ')' at position 9"#,
        ),
        (
            "a in {'b' 'c'}",
            10,
            r#"expected ',' or '}', found string "c" at position 10"#,
        ),
        (
            "a in 'b'",
            5,
            r#"expected '{' starting a set of quoted values, found string "b" at position 5"#,
        ),
        ("has(a", 5, r#"expected ')' after has(label at position 5"#),
        (
            "!",
            1,
            r#"expected a label, has(), all(), global(), '!' or '(' at position 1"#,
        ),
    ];
    for (text, pos, msg) in cases {
        let err = Selector::parse(text).unwrap_err();
        assert_eq!(err.position, pos, "position for {text:?}");
        assert_eq!(err.to_string(), format!("selector {text:?}: {msg}"));
    }
    let err = Selector::parse("a b").unwrap_err();
    assert!(err.to_string().contains("expected an operator"), "{err}");
    assert_eq!(err.position, 2);
}

#[test]
fn error_positions_count_characters() {
    let err = Selector::parse("a == 'é' && %").unwrap_err();
    assert_eq!(err.position, 12);
    let err = Selector::parse("ü").unwrap_err();
    assert_eq!(
        err,
        SelectorError {
            selector: "ü".into(),
            position: 0,
            problem: SelectorProblem::UnexpectedChar('ü')
        }
    );
}

#[test]
fn limits_are_errors_not_crashes() {
    let long = "x".repeat(MAX_LABEL_LEN);
    assert!(Selector::parse(&format!("has({long})")).is_ok());
    let too_long = "x".repeat(MAX_LABEL_LEN + 1);
    let err = Selector::parse(&format!("{too_long} == 'a'")).unwrap_err();
    assert_eq!(err.problem, SelectorProblem::LabelTooLong);

    let ok = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert!(Selector::parse(&ok).is_ok());
    let deep = format!("{}has(a){}", "(".repeat(100_000), ")".repeat(100_000));
    let err = Selector::parse(&deep).unwrap_err();
    assert_eq!(err.problem, SelectorProblem::TooDeep);
    assert_eq!(err.position, MAX_NESTING);

    // Long flat chains are fine (no recursion per operand).
    let chain = vec!["has(a)"; 10_000].join(" && ");
    assert!(sel(&chain).matches(&labels(&[("a", "")])));
    let nots = "!".repeat(100_001) + "has(a)";
    assert_eq!(sel(&nots).to_string(), "!has(a)");
}

#[test]
fn never_panics_on_arbitrary_input() {
    // Every prefix of some tricky selectors, and some byte soup.
    let seeds = [
        "!(a == 'x' && b in {'1', \"2\"}) || has(c) && d starts with 'é' || global()",
        "a not in {'x',} && e ends with \"'\" && f contains '\"'",
        "((((all()))))",
    ];
    for seed in seeds {
        for (i, _) in seed.char_indices() {
            let _ = Selector::parse(&seed[..i]);
            let _ = Selector::parse(&seed[i..]);
        }
    }
    let soup = "(){}!=&|'\"ab ,\u{0}\u{7f}é".chars().collect::<Vec<_>>();
    let mut state = 12345u32;
    for _ in 0..2000 {
        let len = (state % 12) as usize;
        let text: String = (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                soup[(state >> 16) as usize % soup.len()]
            })
            .collect();
        if let Ok(s) = Selector::parse(&text) {
            // Whatever parses must print to something that parses to the same tree.
            assert_eq!(sel(&s.to_string()), s, "{text:?}");
        }
    }
}

#[test]
fn global_is_detected() {
    assert!(sel("global()").uses_global());
    assert!(sel("has(a) || !global()").uses_global());
    assert!(!sel("has(global)").uses_global());
    assert!(!sel("all()").uses_global());
}

#[test]
fn matches_with_lookup_function() {
    let pod = labels(&[("app", "web")]);
    let ns = labels(&[("team", "a")]);
    let s = sel("app == 'web' && team == 'a'");
    assert!(!s.matches(&pod));
    assert!(s.matches_with(|k| pod.get(k).or_else(|| ns.get(k)).map(String::as_str)));
}

#[test]
fn serde_uses_canonical_text() {
    let s: Selector = serde_json::from_str(r#""a=='b'&&has(c)""#).unwrap();
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#""(a == \"b\" && has(c))""#
    );
    let err = serde_json::from_str::<Selector>(r#""a ==""#).unwrap_err();
    assert!(err.to_string().contains("expected a quoted value"), "{err}");
}
