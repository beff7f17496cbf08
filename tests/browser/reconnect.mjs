// Drives /dashboard in Debian's chromium through playwright-core while every stream slot of the
// service is taken (the Rust test holds it): the page's live feed is refused (503), and once
// the slot is free again the page must be live without a reload. Prints "refused" on stderr
// when the page has seen the refusal (the Rust test then frees the slot), and one JSON line on
// stdout; exits 1 on any failure. Usage: node reconnect.mjs BASE_URL
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const result = { ok: false };
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const response = await page.goto(base + "/dashboard");
  if (!response || response.status() !== 200) throw new Error("GET /dashboard: " + (response && response.status()));
  await page.waitForFunction(() => window.orderflowDashboard && window.orderflowDashboard.refused >= 1, null, { timeout: 15000 });
  result.snapshotsWhileRefused = await page.evaluate(() => window.orderflowDashboard.snapshots);
  console.error("refused");
  await page.waitForFunction(() => window.orderflowDashboard.snapshots >= 2, null, { timeout: 20000 });
  result.refused = await page.evaluate(() => window.orderflowDashboard.refused);
  result.role = (await page.textContent("#role")).trim();
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
