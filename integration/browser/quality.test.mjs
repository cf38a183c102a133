// Unit tests of the dashboard's quality helpers (web_root/quality.js) with node's test runner:
// figures graded against the thresholds amihub sends, and a call's worst channel picked from
// the `/quality` summary. Run: node --test integration/browser/quality.test.mjs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  callQualityIndex, gradeOf, qualitySignature, worstOf,
} from '../../web_root/quality.js';

// amihub's defaults ([quality] in config/amihub.toml).
const TH = {
  loss_warn_pct: 1, loss_bad_pct: 5, jitter_warn_ms: 20, jitter_bad_ms: 50,
  rtt_warn_ms: 300, rtt_bad_ms: 600, mos_warn: 4, mos_bad: 3.6,
};

test('figures are graded at and past their thresholds; MOS the other way', () => {
  assert.equal(gradeOf('loss', 0.99, TH), 'good');
  assert.equal(gradeOf('loss', 1, TH), 'warn');
  assert.equal(gradeOf('loss', 5, TH), 'bad');
  assert.equal(gradeOf('jitter', 49.9, TH), 'warn');
  assert.equal(gradeOf('rtt', 600, TH), 'bad');
  assert.equal(gradeOf('mos', 4.39, TH), 'good');
  assert.equal(gradeOf('mos', 3.9, TH), 'warn');
  assert.equal(gradeOf('mos', 3.59, TH), 'bad');
  // Unknown figures or thresholds grade nothing.
  assert.equal(gradeOf('rtt', null, TH), '');
  assert.equal(gradeOf('loss', 3, null), '');
  assert.equal(gradeOf('loss', Number.NaN, TH), '');
});

test("a call shows its worst channel's figures", () => {
  const summary = {
    calls: [
      { channel: 'PJSIP/109-0000000e', grade: 'bad', worst: { mos: 2.79, loss_pct: 10.9 } },
      { channel: 'PJSIP/101-0000000d', grade: 'good', worst: { mos: 4.39, loss_pct: 0 } },
      { channel: 'PJSIP/110-0000001c', grade: 'warn', worst: { mos: 3.95, loss_pct: 1.2 } },
      { grade: 'bad' }, // no channel: ignored
    ],
  };
  const index = callQualityIndex(summary);
  assert.equal(index.size, 3);
  const call = [{ channel: 'PJSIP/101-0000000d' }, { channel: 'PJSIP/109-0000000e' }];
  assert.equal(worstOf(call, index).channel, 'PJSIP/109-0000000e');
  assert.equal(worstOf([{ channel: 'Local/201@agents-1;1' }], index), null);
  assert.deepEqual(qualitySignature(worstOf(call, index)).slice(0, 1), ['bad']);
  assert.equal(callQualityIndex(null).size, 0);
});
