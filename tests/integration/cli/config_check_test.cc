// The three binaries that load workflow_config.json treat it alike: --check-config validates it
// and prints what it holds without touching any server; an invalid or missing config stops
// start-up with exit code 2 and one line naming the JSON path of the mistake.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <ostream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
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
  // The demo config is the example to copy: no placeholder in it lacks a declaration.
  EXPECT_EQ(run.log.find("warning"), std::string::npos) << run.log;
}

// The example of ARCHITECTURE.md "Configuration" starts every binary's --check-config with exit 0;
// its undeclared {days} is printed as a warning with its JSON path.
TEST_P(ConfigCheckTest, TheArchitectureExampleChecksWithAWarning) {
  Run run = Start({"--config", SourcePath("tests/fixtures/configs/architecture_example.json"),
                   "--check-config"});
  EXPECT_EQ(run.code, 0) << run.log;
  EXPECT_NE(run.log.find("config OK: 2 flows, 1 tool, 0 skills; 1 warning:\n"
                         "  flows[1].endpoint.body.days: placeholder {days}"),
            std::string::npos)
      << run.log;
}

// A running service shows the same warnings in its log (here it then stops: no NATS listens).
TEST_P(ConfigCheckTest, WarningsAreLoggedAtAnOrdinaryStart) {
  Run run = Start({"--config", SourcePath("tests/fixtures/configs/architecture_example.json")});
  EXPECT_NE(run.code, 0) << run.log;
  EXPECT_NE(run.log.find("flows[1].endpoint.body.days: placeholder {days}"), std::string::npos)
      << run.log;
  EXPECT_NE(run.log.find("[warning]"), std::string::npos) << run.log;
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

// A worker's admin port is bound before it connects anywhere: a port in use stops the start
// with one line, before the worker could join its queue group or consumer and take work.
TEST(WorkerAdminPort, APortInUseStopsTheStartBeforeAnyServerIsReached) {
  const int busy = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(busy, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(busy, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(busy, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string admin = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  for (const char* binary : {"wf-lightweight", "wf-heavy"}) {
    // No NATS listens on this URL: reaching for it first would fail with another message.
    Process p(BinPath(binary),
              {"--config", SourcePath("config/workflow_config.json"), "--nats-url",
               "nats://127.0.0.1:" + std::to_string(FreePort()), "--admin-listen", admin});
    auto code = p.Wait(milliseconds(15000));
    ASSERT_TRUE(code.has_value()) << binary << " did not exit";
    EXPECT_EQ(*code, 1) << p.Log();
    EXPECT_NE(p.Log().find(std::string(binary) + ": admin port: "), std::string::npos) << p.Log();
    EXPECT_EQ(p.Log().find("NATS"), std::string::npos) << p.Log();
  }
  close(busy);
}

TEST_P(ConfigCheckTest, HelpListsTheSwitch) {
  Process help(BinPath(GetParam()), {"--help"});
  auto code = help.Wait(milliseconds(10000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_NE(help.Log().find("--check-config"), std::string::npos) << help.Log();
}

/// One flag as --help states it, or as README.md's "Command lines" table documents it.
struct FlagDoc {
  std::string env;
  std::string default_value;  ///< "" when none.
  std::string accepts;        ///< The range ("1..64") or the choices, when the flag checks one.
  bool operator==(const FlagDoc&) const = default;
};

std::ostream& operator<<(std::ostream& out, const FlagDoc& f) {
  return out << "{env '" << f.env << "', default '" << f.default_value << "', accepts '"
             << f.accepts << "'}";
}

/// Text between the first pair of backticks of `cell`, or "".
std::string BacktickText(const std::string& cell) {
  auto a = cell.find('`');
  auto b = a == std::string::npos ? a : cell.find('`', a + 1);
  return b == std::string::npos ? std::string() : cell.substr(a + 1, b - a - 1);
}

/// README.md's flag table, rows that apply to `binary` ("all three" or the binary's name).
/// Default cells in backticks are literal; "the number of cores" stands for a machine-dependent
/// default, kept as "cores". A range "N..M" in the last cell is what the flag accepts; so is a
/// list of backticked choices for --log-level.
std::map<std::string, FlagDoc> ReadmeFlags(const std::string& binary) {
  std::ifstream in(SourcePath("README.md"));
  std::string line;
  bool in_table = false;
  std::map<std::string, FlagDoc> out;
  while (std::getline(in, line)) {
    if (line.rfind("| binary | flag | env | default | accepts |", 0) == 0) {
      in_table = true;
      continue;
    }
    if (!in_table) continue;
    if (line.empty() || line[0] != '|') break;
    if (line.rfind("|---", 0) == 0) continue;
    std::vector<std::string> cells;
    std::stringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) cells.push_back(cell);
    if (cells.size() < 5) continue;
    if (cells[0].find("all three") == std::string::npos &&
        cells[0].find(binary) == std::string::npos)
      continue;
    std::string flag = BacktickText(cells[1]);
    flag = flag.substr(0, flag.find(' '));
    FlagDoc doc;
    doc.env = BacktickText(cells[2]);
    doc.default_value =
        cells[3].find("number of cores") != std::string::npos ? "cores" : BacktickText(cells[3]);
    std::smatch range;
    if (std::regex_search(cells[4], range, std::regex(R"((\d+)\.\.(\d+))"))) {
      doc.accepts = range.str(0);
    } else if (flag == "--log-level") {
      std::string choices;
      const std::regex choice("`([a-z]+)`");
      for (std::sregex_iterator it(cells[4].begin(), cells[4].end(), choice), end; it != end;
           ++it) {
        choices += (choices.empty() ? "" : " ") + (*it)[1].str();
      }
      doc.accepts = choices;
    }
    out[flag] = doc;
  }
  return out;
}

/// The flags of `binary --help` ("  --name VALUE" then an indented help line with "(env X)",
/// "[default: D]", "[range: N..M]", "[one of: a b]").
std::map<std::string, FlagDoc> HelpFlags(const std::string& binary) {
  Process help(BinPath(binary), {"--help"});
  EXPECT_TRUE(help.Wait(milliseconds(10000)).has_value());
  std::stringstream text(help.Log());
  std::map<std::string, FlagDoc> out;
  std::string line, flag;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  while (std::getline(text, line)) {
    std::smatch m;
    if (std::regex_match(line, m, std::regex(R"(  (--[a-z-]+)( VALUE)?)"))) {
      flag = m[1];
      out[flag] = {};
      continue;
    }
    if (flag.empty()) continue;
    FlagDoc& doc = out[flag];
    if (std::regex_search(line, m, std::regex(R"(\(env ([A-Z_]+)\))"))) doc.env = m[1];
    if (std::regex_search(line, m, std::regex(R"(\[default: ([^\]]*)\])"))) {
      doc.default_value = m[1];
      // A default that is this machine's core count (capped by the range) is "cores".
      std::smatch r;
      if (flag == "--threads" &&
          std::regex_search(line, r, std::regex(R"(\[range: 1\.\.(\d+)\])")) &&
          doc.default_value == std::to_string(std::min<unsigned long>(cores, std::stoul(r[1])))) {
        doc.default_value = "cores";
      }
    }
    if (std::regex_search(line, m, std::regex(R"(\[range: (\d+\.\.\d+)\])"))) doc.accepts = m[1];
    if (std::regex_search(line, m, std::regex(R"(\[one of: ([^\]]*)\])"))) {
      // README writes "warn (or warning)": both are backticked there, in this order.
      doc.accepts = m[1];
    }
    flag.clear();
  }
  return out;
}

// README.md's "Command lines" table and each binary's --help agree flag by flag: no flag or env
// var undocumented, none documented that the binary lacks, the same defaults and ranges.
TEST_P(ConfigCheckTest, TheReadmeFlagTableIsWhatHelpSays) {
  const auto readme = ReadmeFlags(GetParam());
  const auto help = HelpFlags(GetParam());
  ASSERT_FALSE(readme.empty()) << "no README rows for " << GetParam();
  ASSERT_FALSE(help.empty());
  for (const auto& [flag, doc] : help) {
    auto it = readme.find(flag);
    if (it == readme.end()) {
      ADD_FAILURE() << GetParam() << " " << flag << " " << doc << " is not in README.md";
      continue;
    }
    EXPECT_EQ(it->second, doc) << GetParam() << " " << flag << ": README vs --help";
  }
  for (const auto& [flag, doc] : readme) {
    EXPECT_TRUE(help.count(flag)) << GetParam() << ": README.md documents " << flag
                                  << ", which --help does not list";
  }
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
