//! The translations checked against what a real Asterisk 22 answered (`integration/captures/ajam`).

use super::*;

const AJAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/captures/ajam");

/// The body of a captured HTTP exchange (everything after the first blank line).
fn body(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{AJAM}/{name}.http")).expect("ajam capture");
    let start = text.find("\r\n\r\n").expect("header end") + 4;
    text[start..].to_owned()
}

#[test]
fn queuestatus_as_xml_is_what_asterisk_sends() {
    // The same QueueStatus, asked once over /rawman (with an ActionID) and once over /mxml.
    let rawman: String = body("06_rawman_queuestatus")
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("ActionID:"))
        .collect();
    let xml = xml_document(&translate(&rawman, Format::Xml, XmlTarget::default()));
    assert_eq!(xml, body("07_mxml_queuestatus"));
}

#[test]
fn repeated_headers_are_numbered_in_xml() {
    let ami = "Response: Success\r\nMessage: Command output follows\r\n\
               Output: System uptime: 46 minutes, 8 seconds\r\nOutput: Last reload: 13 seconds\r\n\r\n";
    let xml = xml_document(&translate(ami, Format::Xml, XmlTarget::default()));
    assert_eq!(xml, body("12_mxml_command"));
}

#[test]
fn html_rows_are_what_asterisk_sends() {
    // Rebuild the AMI text from the captured rows, then render it again.
    let captured = body("08_manager_html_coresettings");
    let mut ami = String::new();
    for row in captured.lines() {
        if let Some(cells) = row
            .strip_prefix("<tr><td>")
            .and_then(|r| r.strip_suffix("</td></tr>"))
        {
            let (name, value) = cells.split_once("</td><td>").expect("two cells");
            ami.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    assert!(ami.starts_with("Response: Success\r\nAMIversion: 11.0.0\r\n"));
    ami.push_str("\r\n");
    let html = html_document(&translate(&ami, Format::Html, XmlTarget::default()));
    assert_eq!(html, captured);
}

#[test]
fn attribute_names_are_made_safe_and_values_escaped() {
    let ami = "Event: VarSet\r\nChanVariable(PJSIP/1-01): X=1\r\n1st: a'b<c>&\"d\"\r\n\r\n";
    let xml = translate(ami, Format::Xml, XmlTarget::default());
    assert_eq!(
        xml,
        "<response type='object' id='unknown'><generic event='VarSet' \
         chanvariable_pjsip_1_01_='X=1' _1st='a&apos;b&lt;c&gt;&amp;&quot;d&quot;' /></response>\n"
    );
}

#[test]
fn lines_without_a_colon_become_opaque_data() {
    let ami =
        "Response: Follows\r\nline one\r\nline <two>\r\n--END COMMAND--\r\n\r\nEvent: X\r\n\r\n";
    let xml = translate(
        ami,
        Format::Xml,
        XmlTarget {
            dest: "d",
            objtype: "o",
        },
    );
    assert_eq!(
        xml,
        "<response type='object' id='d'><o response='Follows' opaque_data='line one\n\
         line &lt;two&gt;\n--END COMMAND--' /></response>\n\
         <response type='object' id='d'><o event='X' /></response>\n"
    );
    let html = translate(
        "Response: Follows\r\nout\r\nmore\r\n",
        Format::Html,
        XmlTarget::default(),
    );
    assert_eq!(
        html,
        "<tr><td>Response</td><td>Follows</td></tr>\n<tr><td>Opaque-data</td><td>out<br>\nmore</td></tr>\n\
         <tr><td colspan=\"2\"><hr></td></tr>\r\n"
    );
}
