// HistoryOrder: which WF_HISTORY records may be stored side by side.
#include "worker/history_order.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

using Ids = std::vector<std::uint64_t>;

TEST(HistoryOrder, RecordsWithNoSessionInCommonAreStoredSideBySide) {
  HistoryOrder order;
  EXPECT_TRUE(order.Arrive(1, {"a", "b"}));
  EXPECT_TRUE(order.Arrive(2, {"c"}));
  EXPECT_TRUE(order.Arrive(3, {}));  // undecodable: no session, never waits
  EXPECT_EQ(order.storing(), 3u);
  EXPECT_EQ(order.Done(2), Ids{});
  EXPECT_EQ(order.Done(1), Ids{});
  EXPECT_EQ(order.Done(3), Ids{});
  EXPECT_EQ(order.storing(), 0u);
}

TEST(HistoryOrder, ARecordWaitsForEveryEarlierOneItSharesASessionWith) {
  HistoryOrder order;
  EXPECT_TRUE(order.Arrive(1, {"a"}));
  EXPECT_TRUE(order.Arrive(2, {"b"}));
  EXPECT_FALSE(order.Arrive(3, {"a", "b", "a"}));
  EXPECT_EQ(order.Done(1), Ids{});  // still behind 2
  EXPECT_EQ(order.Done(2), Ids{3});
  EXPECT_EQ(order.storing(), 1u);
  EXPECT_EQ(order.waiting(), 0u);
}

TEST(HistoryOrder, AWaitingRecordBlocksLaterOnesOfItsSessionsButNotOthers) {
  HistoryOrder order;
  EXPECT_TRUE(order.Arrive(1, {"a"}));
  EXPECT_FALSE(order.Arrive(2, {"a", "b"}));
  EXPECT_FALSE(order.Arrive(3, {"b"}));  // b is 2's, which waits: 3 stays behind it
  EXPECT_TRUE(order.Arrive(4, {"c"}));   // nothing in common with anything ahead
  EXPECT_EQ(order.Done(4), Ids{});
  EXPECT_EQ(order.Done(1), Ids{2});
  EXPECT_EQ(order.Done(2), Ids{3});
  EXPECT_EQ(order.Done(3), Ids{});
}

TEST(HistoryOrder, DoneHandsOutEveryRecordThatIsFreeInOrder) {
  HistoryOrder order;
  EXPECT_TRUE(order.Arrive(1, {"a", "b"}));
  EXPECT_FALSE(order.Arrive(2, {"a"}));
  EXPECT_FALSE(order.Arrive(3, {"b"}));
  EXPECT_FALSE(order.Arrive(4, {"a", "c"}));  // behind 2
  EXPECT_EQ(order.Done(1), (Ids{2, 3}));
  EXPECT_EQ(order.Done(3), Ids{});
  EXPECT_EQ(order.Done(2), Ids{4});
}

TEST(HistoryOrder, AnAbandonedRecordTakesEveryWaitingOneWithIt) {
  HistoryOrder order;
  EXPECT_TRUE(order.Arrive(1, {"a"}));
  EXPECT_TRUE(order.Arrive(2, {"b"}));
  EXPECT_FALSE(order.Arrive(3, {"a"}));
  EXPECT_FALSE(order.Arrive(4, {"b"}));
  EXPECT_EQ(order.Abandon(1), (Ids{3, 4}));
  EXPECT_EQ(order.waiting(), 0u);
  EXPECT_EQ(order.storing(), 1u);
  EXPECT_EQ(order.Done(2), Ids{});
  EXPECT_TRUE(order.Arrive(5, {"a", "b"}));
}

}  // namespace
}  // namespace wf
