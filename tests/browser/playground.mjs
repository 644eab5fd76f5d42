// The playground in a real browser: Debian's Chromium, headless, driven by Playwright
// (playwright-core from npm, no downloaded browser), against a running `diffgap serve
// --http-listen` (scripts/ops-check.sh starts it). Types the token and a query, ranks a catalog
// of audio files, checks the ranked candidates and their component scores, plays the best
// one (it must load, have a duration and advance), checks the gap picture, that the page asked
// nothing of any other origin and raised no error, and saves a screenshot.
//
//   node tests/browser/playground.mjs --url http://127.0.0.1:PORT --token TOKEN \
//     --catalog clips --query "a dog barking" --screenshot target/artifacts/playground.png
//
// Prints "ok: ..." per check; exits 1 with "FAILED: ..." on the first failure.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string", default: "" },
    catalog: { type: "string", default: "clips" },
    query: { type: "string", default: "a dog barking" },
    screenshot: { type: "string", default: "target/artifacts/playground.png" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    "timeout-ms": { type: "string", default: "180000" },
  },
});
if (!opt.url) {
  console.error("usage: playground.mjs --url http://HOST:PORT [--token T] [--catalog C] [--query Q] [--screenshot PNG]");
  process.exit(2);
}
const TIMEOUT = Number(opt["timeout-ms"]);
const origin = new URL(opt.url).origin;

const ok = (what) => console.log(`ok: ${what}`);
class Failed extends Error {}
const check = (cond, what) => {
  if (!cond) throw new Failed(what);
};

// The flags of a browser that talks to nothing but the page's server.
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

const profile = mkdtempSync(join(tmpdir(), "diffgap-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    args: FLAGS,
    viewport: { width: 1360, height: 900 },
    deviceScaleFactor: 1,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  const elsewhere = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(`${origin}/`) && !u.startsWith("blob:") && !u.startsWith("data:")) elsewhere.push(u);
  });

  // The page, from the server's root; the token typed, as a user does.
  const first = await page.goto(`${opt.url}/`);
  check(first && first.ok() && page.url() === `${origin}/playground`, `GET / leads to the page (${page.url()})`);
  await page.fill("#token", opt.token);
  await page.click("#connect");
  await page.waitForFunction(
    () => document.querySelector("#server").textContent.startsWith("diffgap ") || !document.querySelector("#error").hidden);
  check(await page.isHidden("#error"), `connecting: ${await page.textContent("#error")}`);
  ok(`the page at ${page.url()} connected with the token: ${await page.textContent("#server")}`);
  // From here on (before the token, the page's first /v1/info may be refused: a logged 401).
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });

  // A typed query against the catalog of sound files.
  const catalogs = await page.$$eval("#catalog option", (os) => os.map((o) => o.value));
  check(catalogs.includes(opt.catalog), `catalog ${opt.catalog} offered (${catalogs})`);
  await page.selectOption("#catalog", opt.catalog);
  const modes = await page.$$eval("#mode option", (os) => os.map((o) => o.value));
  check(modes.includes("fused") && modes.includes("bridged"), `modes offered: ${modes}`);
  await page.selectOption("#mode", "fused");
  await page.fill("#query", opt.query);
  await page.click("#rank");
  await page.waitForFunction(() => ["ranked", "failed"].includes(document.body.dataset.state));
  check(await page.isHidden("#error"), `ranking: ${await page.textContent("#error")}`);
  // Each row by its column names: the fused mode of text -> audio computes the contrastive and
  // bridged components (Info's fusion weights decide which), each shown beside the score.
  const header = await page.$$eval("#results thead th", (ths) => ths.map((th) => th.textContent));
  const rows = await page.$$eval("#results tbody tr.candidate", (trs, names) =>
    trs.map((tr) => Object.fromEntries([...tr.querySelectorAll("td")].map((td, i) => [names[i], td.textContent]))), header);
  check(rows.length > 0, "no ranked candidates shown");
  check(header.includes("contrastive") && header.includes("bridged"), `columns: ${header}`);
  const number = (s) => s !== undefined && s !== "" && Number.isFinite(Number(s));
  for (const r of rows) {
    const components = header.slice(3, -1);
    check(r.id && number(r.score) && components.every((k) => number(r[k])), `row ${JSON.stringify(r)}`);
  }
  const scores = rows.map((r) => Number(r.score));
  check(scores.every((s, i) => i === 0 || s <= scores[i - 1]), `scores not best first: ${scores}`);
  ok(`"${opt.query}" ranked ${rows.length} candidates of ${opt.catalog} (fused), each with its score and components ${header.slice(3, -1).join(", ")}; best: ${rows[0].id} ${rows[0].score}`);

  // The gap picture: the catalog's points, the query, its bridged embedding, the ranked marks.
  const drawn = await page.$$eval("#gap", ([svg]) => ({
    entries: svg.querySelectorAll(".entry").length,
    reverse: svg.querySelectorAll(".reverse").length,
    query: svg.querySelectorAll(".query").length,
    bridged: svg.querySelectorAll(".bridged-query").length,
    ranked: svg.querySelectorAll(".ranked").length,
  }));
  check(drawn.entries > 0 && drawn.reverse === drawn.entries && drawn.query === 1 && drawn.bridged === 1
    && drawn.ranked === rows.length, `gap picture: ${JSON.stringify(drawn)}`);
  ok(`gap picture drawn: ${drawn.entries} entries, as many reverse-bridged, the query and its bridged point, ${drawn.ranked} ranked marked`);

  // The best candidate's sound: fetched with the token, loaded, and playing.
  await page.click("#results tbody tr.candidate >> nth=0 >> button.play");
  await page.waitForSelector("#results tbody tr.candidate >> nth=0 >> audio");
  const sound = await page.$eval("#results tbody tr.candidate audio", async (a) => {
    if (a.readyState < 1) await new Promise((done, fail) => {
      a.addEventListener("loadedmetadata", done, { once: true });
      a.addEventListener("error", () => fail(new Error(`media error ${a.error && a.error.code}`)), { once: true });
    });
    a.currentTime = 0;
    await a.play();
    // Playing: the clock moves (a short clip may already have ended).
    for (let i = 0; i < 50 && a.currentTime === 0 && !a.ended; i++) await new Promise((done) => setTimeout(done, 100));
    return { duration: a.duration, at: a.currentTime, ended: a.ended, src: a.src.slice(0, 5) };
  });
  check(await page.isHidden("#error"), `playing: ${await page.textContent("#error")}`);
  check(sound.src === "blob:" && sound.duration > 0 && sound.at > 0,
    `the sound does not play: ${JSON.stringify(sound)}`);
  ok(`${rows[0].id} plays: ${sound.duration.toFixed(2)} s long, at ${sound.at.toFixed(2)} s after play() resolved, from a Blob URL`);
  await page.$eval("#results tbody tr.candidate audio", (a) => { a.pause(); a.currentTime = 0; });

  check(elsewhere.length === 0, `requests to other origins: ${elsewhere}`);
  check(problems.length === 0, problems.join("; "));
  ok("no request to any other origin, no page or console error");

  const out = resolve(opt.screenshot);
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out, fullPage: true });
  ok(`screenshot ${out}`);
} catch (e) {
  console.error(`FAILED: ${e instanceof Failed ? e.message : e.stack || e}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
