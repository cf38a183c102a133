//! AMI text -> AJAM XML and HTML, following Asterisk's `xml_translate` rules: one element per
//! packet, attribute names lower-cased with every non-alphanumeric byte made `_` (and a leading
//! digit prefixed with `_`), a repeated header numbered `name-2`, `name-3`, …, values escaped,
//! lines without a `:` kept as `opaque_data`.

use std::collections::HashMap;

/// Which AJAM body to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/mxml`: `<response type='object' id='…'><generic … /></response>` per packet.
    Xml,
    /// `/manager`: `<tr><td>Name</td><td>value</td></tr>` rows, a rule after each packet.
    Html,
}

/// The `id` and element name of each XML response (`ajaxdest` and `ajaxobjtype` parameters).
#[derive(Debug, Clone, Copy)]
pub struct XmlTarget<'a> {
    pub dest: &'a str,
    pub objtype: &'a str,
}

impl Default for XmlTarget<'_> {
    fn default() -> Self {
        XmlTarget {
            dest: "unknown",
            objtype: "generic",
        }
    }
}

/// Asterisk's `/manager` page head: a title, the "Manager Tester" form, then the table rows.
const HTML_HEAD: &str = "<title>Asterisk&trade; Manager Interface</title><body bgcolor=\"#ffffff\"><table align=center bgcolor=\"#f1f1f1\" width=\"500\">\r\n\
<tr><td colspan=\"2\" bgcolor=\"#f1f1ff\"><h1>Manager Tester</h1></td></tr>\r\n\
<tr><td colspan=\"2\" bgcolor=\"#f1f1ff\"><form action=\"manager\" method=\"post\">\n\
\tAction: <select name=\"action\">\n\
\t\t<option value=\"\">-----&gt;</option>\n\
\t\t<option value=\"login\">login</option>\n\
\t\t<option value=\"command\">Command</option>\n\
\t\t<option value=\"waitevent\">waitevent</option>\n\
\t\t<option value=\"listcommands\">listcommands</option>\n\
\t</select>\n\
\tor <input name=\"action\"><br/>\n\
\tCLI Command <input name=\"command\"><br>\n\
\tuser <input name=\"username\"> pass <input type=\"password\" name=\"secret\"><br>\n\
\t<input type=\"submit\">\n\
</form>\n\
</td></tr>\r\n";

/// A whole `/mxml` body around translated packets.
pub fn xml_document(packets: &str) -> String {
    format!("<ajax-response>\n{packets}</ajax-response>\n")
}

/// A whole `/manager` body around translated packets.
pub fn html_document(rows: &str) -> String {
    format!("{HTML_HEAD}{rows}</table></body>\r\n")
}

/// Translates AMI text (packets separated by blank lines) into XML elements or HTML rows.
pub fn translate(ami: &str, format: Format, target: XmlTarget<'_>) -> String {
    let xml = format == Format::Xml;
    let mut out = String::with_capacity(ami.len() * 2);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut in_obj = false;
    let mut in_data = false;
    let mut lines = ami.split('\n').map(|l| l.trim_end()).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            close_data(&mut out, &mut in_data, xml);
            if in_obj {
                close_object(&mut out, xml);
                in_obj = false;
                counts.clear();
            }
            continue;
        }
        if !in_obj {
            if xml {
                out.push_str("<response type='object' id='");
                escape_into(&mut out, target.dest, Mode::Value);
                out.push_str("'><");
                escape_into(&mut out, target.objtype, Mode::Value);
            }
            in_obj = true;
        }
        if in_data {
            out.push_str(if xml { "\n" } else { "<br>\n" });
            escape_into(&mut out, line, Mode::Value);
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n.trim_end(), v.trim_start()),
            None => {
                in_data = true;
                ("Opaque-data", line)
            }
        };
        out.push_str(if xml { " " } else { "<tr><td>" });
        let count = counts.entry(name.to_owned()).or_insert(0);
        *count += 1;
        escape_into(
            &mut out,
            name,
            if xml { Mode::Attribute } else { Mode::Value },
        );
        if *count > 1 {
            out.push('-');
            out.push_str(&count.to_string());
        }
        out.push_str(if xml { "='" } else { "</td><td>" });
        escape_into(&mut out, value, Mode::Value);
        let last = lines.peek().is_none_or(|l| l.is_empty());
        if !in_data || last {
            out.push_str(if xml { "'" } else { "</td></tr>\n" });
            if in_data {
                in_data = false;
            }
        }
    }
    close_data(&mut out, &mut in_data, xml);
    if in_obj {
        close_object(&mut out, xml);
    }
    out
}

fn close_data(out: &mut String, in_data: &mut bool, xml: bool) {
    if *in_data {
        out.push_str(if xml { "'" } else { "</td></tr>\n" });
        *in_data = false;
    }
}

fn close_object(out: &mut String, xml: bool) {
    out.push_str(if xml {
        " /></response>\n"
    } else {
        "<tr><td colspan=\"2\"><hr></td></tr>\r\n"
    });
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Text content or an attribute value: markup characters escaped, case kept.
    Value,
    /// An XML attribute name: lower case, `[a-z0-9]` only (others become `_`), no leading digit.
    Attribute,
}

fn escape_into(out: &mut String, s: &str, mode: Mode) {
    for (i, c) in s.chars().enumerate() {
        if mode == Mode::Attribute {
            if i == 0 && c.is_ascii_digit() {
                out.push('_');
                out.push(c);
            } else if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.push('_');
            }
            continue;
        }
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
}
