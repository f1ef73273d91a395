// The three binaries that load workflow_config.json treat it alike: --check-config validates it
// and prints what it holds without touching any server; an invalid or missing config stops
// start-up with exit code 2 and one line naming the JSON path of the mistake.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;
using testing::BinPath;
using testing::FreePort;
using testing::Process;
using testing::SourcePath;
using testing::TempDir;

class ConfigCheckTest : public ::testing::TestWithParam<const char*> {
 protected:
  /// Runs the binary with `args`; no NATS listens on the URL it gets, so any attempt to reach a
  /// server would fail the run.
  struct Run {
    int code = -1;
    std::string log;
  };
  static Run Start(std::vector<std::string> args) {
    args.push_back("--nats-url");
    args.push_back("nats://127.0.0.1:" + std::to_string(FreePort()));
    Process p(BinPath(GetParam()), args);
    auto code = p.Wait(milliseconds(15000));
    EXPECT_TRUE(code.has_value()) << GetParam() << " did not exit";
    return Run{code.value_or(-1), p.Log()};
  }
};

TEST_P(ConfigCheckTest, TheDemoConfigChecksWithoutAnyServer) {
  Run run = Start({"--config", SourcePath("config/workflow_config.json"), "--check-config"});
  EXPECT_EQ(run.code, 0) << run.log;
  EXPECT_NE(run.log.find("config OK: 9 flows, 2 tools, "), std::string::npos) << run.log;
}

TEST_P(ConfigCheckTest, AMistakeIsExitTwoWithItsJsonPath) {
  TempDir dir;
  const std::string bad = dir.path() + "/bad.json";
  std::ofstream(bad) << R"({"flows":[{"flow_id":"a","name":"A","trigger_patterns":["ok","(?P<x"],
      "endpoint":{"url":"http://x/","method":"GET"}}]})";
  for (bool check_only : {true, false}) {
    std::vector<std::string> args = {"--config", bad};
    if (check_only) args.push_back("--check-config");
    Run run = Start(args);
    EXPECT_EQ(run.code, 2) << run.log;
    EXPECT_NE(run.log.find("invalid config: flows[0].trigger_patterns[1]: invalid regex"),
              std::string::npos)
        << run.log;
    EXPECT_EQ(run.log.find("config OK"), std::string::npos) << run.log;
  }

  const std::string wrong_type = dir.path() + "/type.json";
  std::ofstream(wrong_type) << R"({"agent": {"max_tool_rounds": "six"}})";
  Run run = Start({"--config", wrong_type, "--check-config"});
  EXPECT_EQ(run.code, 2) << run.log;
  EXPECT_NE(run.log.find("agent.max_tool_rounds"), std::string::npos) << run.log;

  run = Start({"--config", dir.path() + "/missing.json", "--check-config"});
  EXPECT_EQ(run.code, 2) << run.log;
  EXPECT_NE(run.log.find("config file not found"), std::string::npos) << run.log;
}

// Every flag is parsed and validated before --check-config acts: a bad value is exit 2 with
// the flag named, never "config OK".
TEST_P(ConfigCheckTest, BadFlagsAreExitTwoEvenWithCheckConfig) {
  const std::string config = SourcePath("config/workflow_config.json");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--drain-ms", "abc"}, "--drain-ms: expected an integer"},
      {{"--drain-ms", "-1"}, "--drain-ms: expected an integer"},
      {{"--log-level", "loud"}, "--log-level: expected one of"},
  };
  for (const auto& [flags, message] : cases) {
    for (bool flag_first : {true, false}) {
      std::vector<std::string> args = {"--config", config};
      if (!flag_first) args.push_back("--check-config");
      args.insert(args.end(), flags.begin(), flags.end());
      if (flag_first) args.push_back("--check-config");
      Run run = Start(args);
      EXPECT_EQ(run.code, 2) << run.log;
      EXPECT_NE(run.log.find(message), std::string::npos) << run.log;
      EXPECT_EQ(run.log.find("config OK"), std::string::npos) << run.log;
    }
  }
  // Flags only some binaries take.
  const std::string binary = GetParam();
  std::vector<std::string> args = {"--config", config, "--check-config"};
  if (binary == "wf-gateway") {
    args.insert(args.end(), {"--threads", "abc"});
  } else if (binary == "wf-lightweight") {
    args.insert(args.end(), {"--admin-listen", "nowhere"});
  } else {
    args.insert(args.end(), {"--concurrency", "0"});
  }
  Run run = Start(args);
  EXPECT_EQ(run.code, 2) << run.log;
  EXPECT_EQ(run.log.find("config OK"), std::string::npos) << run.log;
}

// A NATS URL with credentials never reaches a log or an error message: the connect failure
// names the server with `***` in their place.
TEST_P(ConfigCheckTest, NatsCredentialsAreNeverPrinted) {
  for (const std::string userinfo : {"alice:s3cretPW", "t0ken-s3cretPW"}) {
    const std::string url = "nats://" + userinfo + "@127.0.0.1:" + std::to_string(FreePort());
    std::vector<std::string> args = {"--config", SourcePath("config/workflow_config.json"),
                                     "--nats-url", url};
    if (std::string(GetParam()) == "wf-gateway")
      args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    Process p(BinPath(GetParam()), args);
    auto code = p.Wait(milliseconds(15000));
    ASSERT_TRUE(code.has_value()) << GetParam() << " did not exit";
    EXPECT_NE(*code, 0);
    const std::string log = p.Log();
    EXPECT_NE(log.find("cannot connect to NATS at nats://***@127.0.0.1:"), std::string::npos)
        << log;
    EXPECT_EQ(log.find("s3cretPW"), std::string::npos) << log;
    EXPECT_EQ(log.find("alice"), std::string::npos) << log;
  }
}

TEST_P(ConfigCheckTest, HelpListsTheSwitch) {
  Process help(BinPath(GetParam()), {"--help"});
  auto code = help.Wait(milliseconds(10000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_NE(help.Log().find("--check-config"), std::string::npos) << help.Log();
}

INSTANTIATE_TEST_SUITE_P(Binaries, ConfigCheckTest,
                         ::testing::Values("wf-gateway", "wf-lightweight", "wf-heavy"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace wf
