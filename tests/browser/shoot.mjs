// A screenshot of /dashboard after it has watched the live feed for a while (used by
// tests/overload/run.sh to show the dashboard during an overload). Debian's chromium through
// playwright-core. Usage: node shoot.mjs BASE_URL FILE.png [SECONDS=12]
import { chromium } from "playwright-core";

const [base, file, seconds = "12"] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  await page.goto(base + "/dashboard");
  await page.waitForFunction(() => window.orderflowDashboard && window.orderflowDashboard.snapshots >= 2, null, { timeout: 30000 });
  await page.waitForTimeout(Number(seconds) * 1000);
  await page.screenshot({ path: file });
} finally {
  await browser.close();
}
