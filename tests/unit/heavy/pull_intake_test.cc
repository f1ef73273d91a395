// The pure parts of the heavy worker's query intake: the pull request body, the size of the
// next pull and what a reply on a pull's inbox is.
#include "worker/pull_intake.h"

#include <gtest/gtest.h>

#include <chrono>

namespace wf {
namespace {

using std::chrono::milliseconds;

TEST(PullRequestBodyTest, AWaitingPullForOneHasNoNoWait) {
  EXPECT_EQ(PullRequestBody(1, milliseconds(490), false), R"({"batch":1,"expires":490000000})");
}

TEST(PullRequestBodyTest, APullForSeveralEndsWhenTheConsumerHasNoMore) {
  EXPECT_EQ(PullRequestBody(16, milliseconds(490), true),
            R"({"batch":16,"expires":490000000,"no_wait":true})");
}

TEST(PullRequestBodyTest, NonsenseIsClampedToAValidRequest) {
  EXPECT_EQ(PullRequestBody(0, milliseconds(-5), false), R"({"batch":1,"expires":0})");
}

TEST(NextPullBatchTest, NoFreeSlotMeansNoPull) {
  EXPECT_EQ(NextPullBatch(0, 64, true), 0);
  EXPECT_EQ(NextPullBatch(-3, 67, false), 0);
}

TEST(NextPullBatchTest, AnIdleWorkerWithNothingPendingAsksForOne) {
  EXPECT_EQ(NextPullBatch(64, 0, true), 1);
  EXPECT_EQ(NextPullBatch(63, 1, true), 1);
}

TEST(NextPullBatchTest, ABacklogOrABusyWorkerAsksForItsFreeSlotsUpToSixteen) {
  EXPECT_EQ(NextPullBatch(64, 0, false), 16);  // the consumer said more were pending
  EXPECT_EQ(NextPullBatch(62, 2, true), 16);   // busy: take what came meanwhile in one trip
  EXPECT_EQ(NextPullBatch(5, 59, false), 5);
  EXPECT_EQ(NextPullBatch(1, 1, false), 1);
}

TEST(ClassifyPullReplyTest, DataOrNoStatusIsAConsumerMessage) {
  EXPECT_EQ(ClassifyPullReply("", 0), PullReply::kMessage);  // an empty query: still a message
  EXPECT_EQ(ClassifyPullReply("", 42), PullReply::kMessage);
  EXPECT_EQ(ClassifyPullReply("408", 42), PullReply::kMessage);
}

TEST(ClassifyPullReplyTest, StatusMessagesEndTheirPullOrNot) {
  EXPECT_EQ(ClassifyPullReply("100", 0), PullReply::kHeartbeat);
  EXPECT_EQ(ClassifyPullReply("404", 0), PullReply::kEnd);
  EXPECT_EQ(ClassifyPullReply("408", 0), PullReply::kEnd);
  EXPECT_EQ(ClassifyPullReply("409", 0), PullReply::kRefused);
  EXPECT_EQ(ClassifyPullReply("400", 0), PullReply::kRefused);
  EXPECT_EQ(ClassifyPullReply("503", 0), PullReply::kRefused);
}

}  // namespace
}  // namespace wf
