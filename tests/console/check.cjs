// Drives tierlog's web console in Debian's chromium (playwright-core, which downloads no
// browser) and checks what a person would see.
//
//   NODE_PATH=DIR/node_modules node check.cjs BASE_URL SPEC_JSON OUT_DIR
//
// SPEC_JSON: {"topic", "partitions", "group", "group_lag", "cold_value", "count"}. Every page is
// rendered, checked and saved as OUT_DIR/<page>.png; any console error, page error or failed
// request fails the run. Prints a JSON summary; exits 1 with the reason on the first failure.
"use strict";

const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const [base, specJson, outDir] = process.argv.slice(2);
const spec = JSON.parse(specJson);
fs.mkdirSync(outDir, { recursive: true });

function fail(msg) {
  console.error(`console check failed: ${msg}`);
  process.exit(1);
}

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.TIERLOG_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const problems = [];
  const summary = { pages: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));

    const show = async (name, hash) => {
      await page.evaluate((h) => { document.body.dataset.ready = ""; location.hash = h; }, hash);
      await page.waitForSelector('body[data-ready="1"]', { timeout: 60000 });
      const err = await page.$(".error");
      expect(!err, `${name}: the page shows an error: ${err && (await err.innerText())}`);
    };
    const shot = async (name) => {
      await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
      summary.pages.push(name);
    };
    const cells = (selector) => page.$$eval(`${selector} tbody tr`, (rows) =>
      rows.map((r) => Array.from(r.querySelectorAll("td"), (td) => td.innerText.trim())));

    await page.goto(base + "/", { waitUntil: "load" });
    await page.waitForSelector('body[data-ready="1"]', { timeout: 60000 });
    // Overview: nodes, and live charts once two samples were taken.
    const nodes = await cells("#nodes-table");
    expect(nodes.length >= 1, "overview: no node listed");
    await page.waitForFunction(() => {
      const l = document.querySelector("#chart-throughput .legend");
      return l && /in /.test(l.innerText);
    }, null, { timeout: 30000 });
    summary.nodes = nodes.length;
    await shot("overview");

    await show("topics", "#/topics");
    const topics = await cells("#topics-table");
    expect(topics.some((r) => r[0] === spec.topic), `topics: ${spec.topic} not listed: ${JSON.stringify(topics)}`);
    expect(!(await page.$("#create-topic")), "topics: a read-only console offers to create topics");
    await shot("topics");

    await show("topic", `#/topics/${encodeURIComponent(spec.topic)}`);
    const parts = await cells("#partitions-table");
    expect(parts.length === spec.partitions, `topic: ${parts.length} partition rows, expected ${spec.partitions}`);
    summary.partitions = parts.length;
    await shot("topic");

    await show("groups", "#/groups");
    const groups = await cells("#groups-table");
    expect(groups.some((r) => r[0] === spec.group), `groups: ${spec.group} not listed: ${JSON.stringify(groups)}`);
    await shot("groups");

    await show("group", `#/groups/${encodeURIComponent(spec.group)}`);
    const lag = await cells("#group-lag-table");
    const total = lag.reduce((a, r) => a + Number((r[4] || "0").replace(/,/g, "")), 0);
    expect(total === spec.group_lag, `group: lag ${total} shown, expected ${spec.group_lag}: ${JSON.stringify(lag)}`);
    summary.group_lag = total;
    await shot("group");

    await show("records", `#/records?topic=${encodeURIComponent(spec.topic)}&partition=0&offset=0&limit=5`);
    const source = await page.$eval("#records-source", (e) => e.innerText.trim());
    expect(source === "cold", `records: read from ${source}, expected the cold tier`);
    const records = await cells("#records-table");
    expect(records.length === 5, `records: ${records.length} rows, expected 5`);
    expect(records[0][0] === "0" && records[0][3] === spec.cold_value,
      `records: first row ${JSON.stringify(records[0])}, expected offset 0 with ${spec.cold_value}`);
    summary.record = records[0];
    await shot("records");

    await show("records-hex", `#/records?topic=${encodeURIComponent(spec.topic)}&partition=0&offset=0&limit=1&format=hex`);
    const hex = (await cells("#records-table"))[0][3];
    const want = Buffer.from(spec.cold_value).toString("hex").match(/../g).join(" ");
    expect(hex === want, `records as hex: ${hex}, expected ${want}`);
    await shot("records-hex");

    await show("sql", "#/sql");
    await page.fill("#sql-form textarea", `SELECT count(*) AS n FROM "${spec.topic}"`);
    await page.click("#sql-form button");
    await page.waitForSelector("#sql-table, #sql-result .error", { timeout: 60000 });
    const sqlError = await page.$("#sql-result .error");
    expect(!sqlError, `sql: ${sqlError && (await sqlError.innerText())}`);
    const rows = await cells("#sql-table");
    expect(rows.length === 1 && rows[0][0] === String(spec.count), `sql: ${JSON.stringify(rows)}, expected ${spec.count}`);
    await shot("sql");

    expect(problems.length === 0, `the browser reported: ${problems.join("; ")}`);

    // A change asked of a read-only console is refused, with a reason (the browser logs the
    // 403 it was sent, so this comes after the check for errors).
    const refused = await page.evaluate(async () => {
      const r = await fetch("/api/v1/topics", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "from-the-console", partitions: 1 }) });
      return { status: r.status, body: await r.json() };
    });
    expect(refused.status === 403 && /read-only/.test(refused.body.error), `admin: ${JSON.stringify(refused)}`);
    console.log(JSON.stringify(summary));
  } catch (e) {
    await browser.close();
    fail(`${e.message}${problems.length ? " (browser: " + problems.join("; ") + ")" : ""}`);
  }
  await browser.close();
})().catch((e) => fail(e.stack || String(e)));
