//! A CSV writer (RFC 4180) for files people open in spreadsheets: records end in CRLF; a field
//! with a comma, a double quote, CR or LF is quoted, its quotes doubled; and a field a
//! spreadsheet would read as a formula (one starting with `=`, `+`, `-`, `@`, tab or CR) gets a
//! leading `'`, which spreadsheets show as text (OWASP's advice on CSV injection). Callers
//! choose tenant and model names, so every field goes through this.

/// Characters that make a spreadsheet read a cell as a formula when they start it.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// The end of every record.
pub const LINE_END: &str = "\r\n";

/// Appends `value` as one field: neutralised if a spreadsheet would take it for a formula,
/// quoted if it needs to be.
pub fn push_field(out: &mut String, value: &str) {
    let neutralise = value.starts_with(FORMULA_STARTS);
    let quote = value.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if neutralise {
        out.push('\'');
    }
    if quote {
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends one record: `fields` separated by commas, then CRLF.
pub fn push_record<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(out, field.as_ref());
    }
    out.push_str(LINE_END);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: &str) -> String {
        let mut out = String::new();
        push_field(&mut out, value);
        out
    }

    #[test]
    fn plain_fields_are_written_as_they_are() {
        assert_eq!(field("team-a"), "team-a");
        assert_eq!(field(""), "");
        assert_eq!(
            field("anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
        assert_eq!(field("0.000123000"), "0.000123000");
        assert_eq!(field("(other)"), "(other)");
        assert_eq!(field("équipe 東京"), "équipe 東京");
        // Only a formula character at the start counts.
        assert_eq!(field("a=b+c-d@e"), "a=b+c-d@e");
    }

    #[test]
    fn commas_quotes_and_line_breaks_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("\""), "\"\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\rlf"), "\"cr\rlf\"");
        assert_eq!(
            field("<img src=x onerror=alert(1)>"),
            "<img src=x onerror=alert(1)>"
        );
    }

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(field("=1+2"), "'=1+2");
        assert_eq!(field("+1"), "'+1");
        assert_eq!(field("-1"), "'-1");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("\tx"), "'\tx");
        // Neutralised and quoted: the quote comes first, then the apostrophe.
        assert_eq!(field("\rx"), "\"'\rx\"");
        assert_eq!(
            field("=HYPERLINK(\"http://evil\",\"a,b\")"),
            "\"'=HYPERLINK(\"\"http://evil\"\",\"\"a,b\"\")\""
        );
    }

    #[test]
    fn records_end_in_crlf() {
        let mut out = String::new();
        push_record(&mut out, &["a", "b,c", ""]);
        push_record(&mut out, &[String::from("=x"), String::from("1")]);
        assert_eq!(out, "a,\"b,c\",\r\n'=x,1\r\n");
    }
}
