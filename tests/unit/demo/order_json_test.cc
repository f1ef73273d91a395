// The demo API's order body is written as text (demo_api.cc, OrderJson); these tests hold it to
// the document the endpoint answered before, built here with nlohmann from the same rules, byte
// for byte (numbers included: nlohmann prints 34.0, 9.5, 19.99).
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "codec/json_dump.h"
#include "demo_api.h"

namespace wf::demo {
namespace {

using Json = nlohmann::ordered_json;

/// The date `offset` days after 1 January 2025, by the standard library's calendar.
std::string Date2025(std::uint64_t offset) {
  using namespace std::chrono;
  const year_month_day date{sys_days{year{2025} / January / 1} + days{offset}};
  char text[16];
  std::snprintf(text, sizeof text, "%04d-%02u-%02u", static_cast<int>(date.year()),
                static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()));
  return text;
}

double Cents(std::int64_t cents) { return static_cast<double>(cents) / 100.0; }

std::string Reference(std::uint64_t id, const std::string& id_text, bool verbose) {
  static constexpr std::array<const char*, 5> kStatuses = {"processing", "shipped", "delivered",
                                                           "cancelled", "pending_payment"};
  const std::string status = kStatuses[id % kStatuses.size()];
  Json items = Json::array();
  std::int64_t total = 0;
  for (std::uint64_t i = 0; i < 1 + id % 3; ++i) {
    const DemoProduct& p = Catalog()[(id + i * 3) % Catalog().size()];
    const auto quantity = static_cast<std::int64_t>(1 + (id / (i + 1)) % 3);
    total += p.cents * quantity;
    items.push_back(
        {{"sku", p.sku}, {"name", p.name}, {"quantity", quantity}, {"unit_price", Cents(p.cents)}});
  }
  Json order = {{"order_id", id_text},
                {"status", status},
                {"items", std::move(items)},
                {"total", Cents(total)},
                {"currency", "USD"},
                {"eta", status == "cancelled" ? Json(nullptr) : Json(Date2025(id % 365))}};
  if (verbose) {
    order["history"] = Json::array({{{"at", Date2025((id + 360) % 365)}, {"event", "ordered"}},
                                    {{"at", Date2025((id + 362) % 365)}, {"event", status}}});
  }
  return DumpJson(order);
}

TEST(OrderJsonTest, SameBytesAsTheDocumentBuiltWithNlohmann) {
  // Every residue of the id that picks something (status mod 5, items mod 3 and mod 8,
  // quantities, the day of the year mod 365) comes round many times in this range.
  for (std::uint64_t id = 1000; id < 30000; ++id) {
    const std::string text = std::to_string(id);
    ASSERT_EQ(OrderJson(id, text, false), Reference(id, text, false)) << id;
    ASSERT_EQ(OrderJson(id, text, true), Reference(id, text, true)) << id;
  }
}

TEST(OrderJsonTest, LargeIdsAndTheIdAsSent) {
  for (std::uint64_t id : {std::uint64_t{999999999999999999}, std::uint64_t{123456789012345678},
                           std::uint64_t{1} << 40}) {
    const std::string text = std::to_string(id);
    EXPECT_EQ(OrderJson(id, text, true), Reference(id, text, true)) << id;
  }
  // Leading zeros stay in order_id as the client sent them.
  EXPECT_EQ(OrderJson(1234, "001234", false), Reference(1234, "001234", false));
  EXPECT_EQ(Json::parse(OrderJson(1234, "001234", false))["order_id"], "001234");
}

TEST(OrderJsonTest, ParsesAsTheOrderItDescribes) {
  const Json order = Json::parse(OrderJson(1237, "1237", false));
  EXPECT_EQ(order["status"], "delivered");
  ASSERT_EQ(order["items"].size(), 2U);
  EXPECT_EQ(order["items"][0]["name"], "27\" 4K Monitor");
  EXPECT_EQ(order["items"][1]["unit_price"], 19.99);
  EXPECT_EQ(order["total"], 497.99);
  EXPECT_EQ(order["eta"], "2025-05-23");
  EXPECT_TRUE(Json::parse(OrderJson(1003, "1003", false))["eta"].is_null());  // cancelled
}

}  // namespace
}  // namespace wf::demo
