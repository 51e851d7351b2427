import LifeboatCommands

// The root only dispatches. Global options may come before the subcommand, as with restic.
await LifeboatCommand.run(arguments: Array(CommandLine.arguments.dropFirst()))
