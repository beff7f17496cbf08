// Drives /dashboard in Debian's chromium through playwright-core (no browser download) while the
// Rust test sends traffic: the page loads, its charts change with live traffic, it shows a
// shedding episode, and the admin token brings up the recent dead letters. Prints one JSON line;
// exits 1 on any failure. Usage: node dashboard.mjs BASE_URL ADMIN_TOKEN [SCREENSHOT.png]
import { chromium } from "playwright-core";

const [base, token, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const result = { ok: false, steps: [] };
const step = (s) => { result.steps.push(s); console.error("dashboard: " + s); };

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const response = await page.goto(base + "/dashboard");
  if (!response || response.status() !== 200) throw new Error("GET /dashboard: " + (response && response.status()));
  step("loaded");
  await page.waitForFunction(() => window.orderflowDashboard && window.orderflowDashboard.snapshots >= 2, null, { timeout: 15000 });
  step("live feed connected");
  const flowBefore = await page.evaluate(() => document.querySelector("#chart-flow canvas").toDataURL());
  // Traffic: decided/s goes above zero on the chart.
  await page.waitForFunction(() => {
    const d = window.orderflowDashboard.charts.flow.data;
    return d[3].some((v) => v > 0) && d[1].some((v) => v > 0);
  }, null, { timeout: 30000 });
  await page.waitForTimeout(1000); // uPlot redraws on the next animation frame
  const flowAfter = await page.evaluate(() => document.querySelector("#chart-flow canvas").toDataURL());
  if (flowAfter === flowBefore) throw new Error("the flow chart did not change with traffic");
  result.points = await page.evaluate(() => window.orderflowDashboard.charts.flow.data[0].length);
  step("charts follow the traffic");
  // Overload: the admission badge turns to shedding and an episode is listed.
  await page.waitForSelector('#admission-state[data-state="shedding"]', { timeout: 45000 });
  await page.waitForFunction(() => window.orderflowDashboard.charts.flow.data[2].some((v) => v > 0), null, { timeout: 10000 });
  const episode = await page.textContent("#episodes");
  if (!/wait_budget|broker_/.test(episode)) throw new Error("no shedding episode listed: " + episode);
  result.episode = episode.trim();
  step("shedding episode shown");
  // Admin data with the admin token.
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.waitForFunction(() => document.querySelectorAll("#dead-letters tbody tr td.reason").length > 0, null, { timeout: 10000 });
  result.deadLetter = (await page.textContent("#dead-letters tbody tr td.reason")).trim();
  step("dead letters shown with the admin token");
  result.hot = (await page.textContent("#hot tbody")).trim().slice(0, 200);
  if (screenshot) {
    await page.waitForTimeout(1500);
    await page.screenshot({ path: screenshot, fullPage: true });
    step("screenshot " + screenshot);
  }
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
