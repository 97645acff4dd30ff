// az-table-catalog on Azure Functions: one storage account (host + catalog), a Flex Consumption
// Python function app running as a user-assigned identity, and Entra ID-only monitoring.
// Deployed to a resource group: `azd up` (azd asks for or creates the group) or
// `az deployment group create` (see the README, "Deploy to Azure"). No key, SAS or connection string with a key
// is created or output anywhere.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; part of the unique token in resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of every resource; must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Principal (object) id granted the storage data roles, to use the catalog from a workstation or pipeline. azd passes the signed-in user (AZURE_PRINCIPAL_ID). Empty grants nothing.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principal principalId is: User for a person, ServicePrincipal for a CI identity.')
param principalType string = 'User'

@minLength(1)
@description('CATALOG_INDEX_KEYS: comma-separated fields records are looked up by. Persisted (locked) with the tables by the first writer.')
param catalogIndexKeys string

@minLength(1)
@description('CATALOG_ROW_KEY: the field records sort by within an index value. Locked like the index keys.')
param catalogRowKey string

@description('CATALOG_CASE_SENSITIVE: match index values with exact case (false matches case-insensitively, as the seed did).')
param catalogCaseSensitive bool = false

@minLength(3)
@maxLength(63)
@description('CATALOG_TABLE: index table name (letters and digits, starting with a letter).')
param catalogTable string = 'catalog'

@minLength(3)
@maxLength(63)
@description('CATALOG_WAL_TABLE: WAL table name; the WAL is the source of truth.')
param catalogWalTable string = '${catalogTable}wal'

@minLength(3)
@maxLength(56)
@description('CATALOG_QUEUE: queue name (lowercase letters, digits, single hyphens); <queue>-poison is created too, so at most 56 characters.')
param catalogQueue string = '${toLower(catalogTable)}-wal'

@description('CATALOG_SWEEP_SCHEDULE: NCRONTAB (6 fields) of the timer that applies WAL entries the queue path missed.')
param catalogSweepSchedule string = '0 */1 * * * *'

@description('CATALOG_APPLY_CONCURRENCY: index writes the apply path has in flight per instance, shared by every queue message and sweep shard (1-256).')
param catalogApplyConcurrency string = '32'

@description('CATALOG_SETTLE_SECONDS: how old a WAL entry must be before the sweep and the change feed trust that nothing older can still appear (0-3600). The default is the WAL write deadline plus clock skew.')
param catalogSettleSeconds string = '50'

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Most instances the Flex Consumption plan scales out to.')
param maximumInstanceCount int = 100

@description('Spread the Flex Consumption plan over availability zones. Needs a region that supports it and zone-redundant storage (storageSkuName Standard_ZRS, Standard_GZRS or Standard_RAGZRS).')
param zoneRedundant bool = false

@allowed([
  '3.11'
  '3.12'
])
@description('Python version of the function app.')
param pythonVersion string = '3.11'

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
@description('Storage replication. Geo-redundant by default because the WAL table is the source of truth.')
param storageSkuName string = 'Standard_GRS'

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps logs and telemetry.')
param logRetentionInDays int = 30

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// Must match the service name in azure.yaml: azd deploys to the app carrying this tag.
var serviceName = 'api'
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${functionAppName}'
  location: location
  tags: tags
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    indexTableName: catalogTable
    walTableName: catalogWalTable
    queueName: catalogQueue
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: appIdentity.properties.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module functionApp 'app/function.bicep' = {
  name: 'functionApp'
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    identityId: appIdentity.id
    identityClientId: appIdentity.properties.clientId
    blobServiceUri: storage.outputs.blobServiceUri
    queueServiceUri: storage.outputs.queueServiceUri
    tableServiceUri: storage.outputs.tableServiceUri
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    zoneRedundant: zoneRedundant
    catalogTable: catalogTable
    catalogWalTable: catalogWalTable
    catalogQueue: catalogQueue
    catalogIndexKeys: catalogIndexKeys
    catalogRowKey: catalogRowKey
    catalogCaseSensitive: catalogCaseSensitive
    catalogSweepSchedule: catalogSweepSchedule
    catalogApplyConcurrency: catalogApplyConcurrency
    catalogSettleSeconds: catalogSettleSeconds
  }
}

// azd reads these into the environment (.azure/<env>/.env). None is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_TABLE_URI string = storage.outputs.tableServiceUri
output AZURE_STORAGE_QUEUE_URI string = storage.outputs.queueServiceUri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
