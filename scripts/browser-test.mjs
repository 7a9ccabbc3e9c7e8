// The dashboard in Debian's chromium through playwright-core (see
// browser-test.sh). Every step fails with what it waited for.
import { createRequire } from "node:module";
const require = createRequire(process.env.NODE_PATH + "/");
const { chromium } = require("playwright-core");

const base = process.env.BASE;
const token = process.env.TOKEN;
const log = (m) => console.error(`[browser-test] ${new Date().toISOString().slice(11, 19)} ${m}`);
const step = async (name, fn) => {
  const t = Date.now();
  try {
    await fn();
  } catch (e) {
    throw new Error(`${name}: ${e.message}`);
  }
  log(`ok: ${name} (${((Date.now() - t) / 1000).toFixed(1)}s)`);
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Failed loads are judged by their responses below (401 is how the page
  // learns it needs the token; the browser asks for a favicon there is none of).
  page.on("console", (m) => { if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) { errors.push(m.text()); } });
  page.on("response", (r) => {
    if (r.status() >= 400 && r.status() !== 401 && !r.url().endsWith("/favicon.ico")) { errors.push(`${r.status()} from ${r.url()}`); }
  });
  // Nothing may be fetched from anywhere but the appliance.
  page.on("request", (r) => { if (!r.url().startsWith(base)) { errors.push("external request " + r.url()); } });

  await page.goto(base + "/ui/");
  await step("the page asks for the token", async () => {
    await page.locator("#auth").waitFor({ state: "visible", timeout: 15000 });
  });
  await step("with the token, the table lists the functions", async () => {
    await page.fill("#token", token);
    await page.click("#auth-form button[type=submit]");
    await page.locator("#auth").waitFor({ state: "hidden", timeout: 15000 });
    await page.locator("#functions tr", { hasText: "echo" }).waitFor({ timeout: 30000 });
  });
  await step("a row opens its details", async () => {
    await page.locator("#functions tr", { hasText: "echo" }).click();
    await page.locator("#detail").waitFor({ state: "visible", timeout: 5000 });
    const name = await page.textContent("#detail-name");
    if (name !== "echo") { throw new Error(`details show ${JSON.stringify(name)}`); }
  });
  await step("a function deployed through the form answers at /invoke/<name>", async () => {
    await page.click("#new-fn summary");
    await page.fill("#new-name", "formfn");
    await page.selectOption("#new-runtime", "python3");
    await page.selectOption("#new-mode", "exec");
    await page.fill("#new-code", "print('deployed from the form')\n");
    await page.click("#new-deploy");
    await page.waitForFunction(() => /formfn: .*ready.*answers at/.test(document.getElementById("new-status").textContent),
      null, { timeout: 180000 });
    const status = await page.textContent("#new-status");
    if (!status.includes("deploying")) { throw new Error(`status skipped deploying: ${status}`); }
    const res = await fetch(base + "/invoke/formfn");
    const body = await res.text();
    if (res.status !== 200 || !body.includes("deployed from the form")) {
      throw new Error(`/invoke/formfn: ${res.status} ${body.slice(0, 200)}`);
    }
  });
  await step("the invoke form shows status and answer", async () => {
    await page.locator("#functions tr", { hasText: "echo" }).click();
    await page.selectOption("#invoke-method", "POST");
    await page.fill("#invoke-path", "/from/browser");
    await page.fill("#invoke-body", "hello body");
    await page.click("#invoke-send");
    await page.waitForFunction(() => /^200 /.test(document.getElementById("invoke-status").textContent), null, { timeout: 60000 });
    const answer = await page.textContent("#invoke-answer");
    if (!answer.includes("hello body") || !answer.includes("/from/browser")) {
      throw new Error(`answer: ${answer.slice(0, 200)}`);
    }
  });
  await step("the chart shows points after requests", async () => {
    for (let i = 0; i < 5; i++) { await fetch(base + "/invoke/echo"); }
    await page.waitForFunction(() => {
      const p = document.querySelector("#charts svg path.l1");
      return p && Number(p.getAttribute("data-points")) >= 1;
    }, null, { timeout: 30000 });
  });
  await step("the start-time chart has a point after the function's VM booted", async () => {
    // echo's VM booted when the appliance deployed it, minutes ago: the
    // series has its start and the chart draws it as a boot point.
    const res = await fetch(base + "/api/functions/echo/series", { headers: { Authorization: "Bearer " + token } });
    const data = await res.json();
    const boots = (data.points || []).filter((p) => p.boot && p.boot.count > 0 && p.boot.medianSeconds > 0);
    if (res.status !== 200 || boots.length === 0) {
      throw new Error(`/api/functions/echo/series: ${res.status}, no boot in ${JSON.stringify(data).slice(0, 300)}`);
    }
    await page.waitForFunction((want) => {
      const dots = document.querySelectorAll("#charts svg circle.starts-boot");
      return dots.length >= want && document.querySelector("#charts svg path.starts-boot");
    }, boots.length, { timeout: 30000 });
  });
  await step("at 420px nothing scrolls sideways and the last error is not cut", async () => {
    await page.setViewportSize({ width: 420, height: 900 });
    await page.waitForTimeout(300);
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    if (w > 420) { throw new Error(`page is ${w}px wide`); }
    const cell = await page.evaluate(() => {
      const td = document.querySelector("#functions tr td.err");
      return td ? getComputedStyle(td).overflow + "/" + getComputedStyle(td).whiteSpace : "none";
    });
    if (cell !== "none" && !cell.startsWith("visible")) { throw new Error(`last-error cell is ${cell}`); }
  });
  if (errors.length) { throw new Error("page errors: " + errors.join("; ")); }
} finally {
  await browser.close();
}
