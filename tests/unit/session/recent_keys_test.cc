// RecentKeys: the lossy "seen lately" table behind TryLockAndLoadHistory's PostgreSQL look-up.
#include "session/recent_keys.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace wf {
namespace {

/// Adds `count` keys `<prefix><i>` in order; returns them and how many are remembered after.
template <std::size_t Slots>
std::pair<std::vector<std::string>, int> AddAndCount(RecentKeys<Slots>& keys,
                                                     const std::string& prefix, int count) {
  std::vector<std::string> added;
  for (int i = 0; i < count; ++i) {
    added.push_back(prefix + std::to_string(i));
    keys.Add(added.back());
  }
  int remembered = 0;
  for (const std::string& key : added) remembered += keys.Contains(key) ? 1 : 0;
  return {added, remembered};
}

TEST(RecentKeysTest, RemembersWhatWasAddedUntilRemoved) {
  RecentKeys<64> keys;
  EXPECT_FALSE(keys.Contains("s-1"));
  EXPECT_FALSE(keys.Contains(""));
  keys.Add("s-1");
  keys.Add("");
  EXPECT_TRUE(keys.Contains("s-1"));
  EXPECT_TRUE(keys.Contains(""));
  EXPECT_FALSE(keys.Contains("s-2"));
  EXPECT_FALSE(keys.Contains("s-1 "));
  keys.Remove("s-2");  // not there: changes nothing
  EXPECT_TRUE(keys.Contains("s-1"));
  keys.Remove("s-1");
  EXPECT_FALSE(keys.Contains("s-1"));
}

TEST(RecentKeysTest, ALaterKeyOfTheSameSlotPushesTheEarlierOut) {
  RecentKeys<8> keys;
  // With 8 slots, 9 keys share a slot somewhere; the later one wins it, and the other keys
  // stay. Never a key that was not added.
  const auto [added, remembered] = AddAndCount(keys, "session-", 200);
  EXPECT_GE(remembered, 1);
  EXPECT_LE(remembered, 8);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(keys.Contains("other-" + std::to_string(i)));
  // The last key added is always remembered.
  EXPECT_TRUE(keys.Contains(added.back()));
}

TEST(RecentKeysTest, RemovingAKeyLeavesAnotherKeyOfItsSlotAlone) {
  RecentKeys<1> keys;  // one slot: every key shares it
  keys.Add("a");
  keys.Add("b");
  EXPECT_FALSE(keys.Contains("a"));
  keys.Remove("a");
  EXPECT_TRUE(keys.Contains("b"));
}

TEST(RecentKeysTest, SpreadsKeysOverTheSlots) {
  // Session ids that differ in one character must not pile into a few slots: of 4096 ids in a
  // 4096-slot table, a uniform hash keeps about 63% (1 - 1/e).
  RecentKeys<4096> keys;
  EXPECT_GT(AddAndCount(keys, "bench-", 4096).second, 2400);
}

TEST(RecentKeysTest, ThreadsAddAndReadAtOnce) {
  RecentKeys<1024> keys;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&keys, t] {
      for (int i = 0; i < 10000; ++i) {
        const std::string key = std::to_string(t) + ":" + std::to_string(i);
        keys.Add(key);
        (void)keys.Contains(key);
        if (i % 3 == 0) keys.Remove(key);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_FALSE(keys.Contains("never added"));
}

}  // namespace
}  // namespace wf
